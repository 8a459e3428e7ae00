//! Kubernetes resource quantities ("100m", "200Mi", "1.5", "2e3"), parsed exactly as
//! k8s.io/apimachinery/pkg/api/resource does, and the kubelet's resource math.
//! STUB: signatures agreed; bodies filled in by the core owner.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    #[error("quantity {0} is too large")]
    TooLarge(String),
}

/// A parsed quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    /// The value in nano units (1 = 1e-9), rounded up, saturating far outside any resource use.
    pub nanos: i128,
}

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let _ = s;
        unimplemented!("stub")
    }
    /// Value in milli-units rounded up (as Kubernetes' MilliValue): "100m" -> 100, "1" -> 1000.
    pub fn milli_value(&self) -> i64 {
        unimplemented!("stub")
    }
    /// Value in whole units rounded up (as Kubernetes' Value): "200Mi" -> 209715200.
    pub fn value(&self) -> i64 {
        unimplemented!("stub")
    }
}

/// CFS quota in microseconds for a CPU limit in millicores, per `CPU_PERIOD_US` (kubelet:
/// milli * 100000 / 1000, at least 1000).
pub const CPU_PERIOD_US: u64 = 100_000;
pub fn cpu_quota_us(limit_milli: i64) -> i64 {
    let _ = limit_milli;
    unimplemented!("stub")
}
/// cgroup cpu shares for a CPU request in millicores (kubelet: milli * 1024 / 1000, 2..=262144).
pub fn cpu_shares(request_milli: i64) -> u64 {
    let _ = request_milli;
    unimplemented!("stub")
}
