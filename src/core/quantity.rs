//! Kubernetes resource quantities ("100m", "200Mi", "1.5", "2e3"), parsed exactly as
//! k8s.io/apimachinery/pkg/api/resource `ParseQuantity` does, and the kubelet's resource math.
//!
//! The scanner is a port of apimachinery's `parseQuantityString`, so the same strings are
//! accepted and refused with the same error, including the odd corners Kubernetes accepts:
//! `"1."`, `".5"`, `"1.G"`, and even number-less strings such as `"."`, `"-"` and `"Mi"` (all 0).
//! Values are kept exactly down to the nano unit; finer non-zero values are rounded away from zero
//! as Kubernetes does ("0.1n" -> 1n).

use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// Not returned by [`Quantity::parse`] (Kubernetes caps a huge quantity instead of refusing
    /// it); for callers that put a bound on a parsed value.
    #[error("quantity {0} is too large")]
    TooLarge(String),
    /// The suffix is none of the known ones ("1Mb", "1e", "1Ki3").
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// No digits where Kubernetes' slow (arbitrary precision) path needs some ("Ei", "-e-10").
    #[error("unable to parse numeric part of quantity")]
    Numeric,
}

/// A parsed quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    /// The value in nano units (1 = 1e-9), rounded up, saturating far outside any resource use.
    pub nanos: i128,
}

/// Kubernetes caps a binary-suffixed quantity at 2^63-1 (its `maxAllowed`).
const MAX_BINARY_NANOS: u128 = (i64::MAX as u128) * NANOS_PER_UNIT as u128;
/// Where decimal quantities saturate (about 1.7e29 units; Kubernetes keeps them exactly).
const MAX_NANOS: u128 = i128::MAX as u128;
const NANOS_PER_UNIT: i128 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalExponent,
    DecimalSi,
    BinarySi,
}

/// The pieces `parseQuantityString` cuts a quantity into.
struct Scanned<'a> {
    positive: bool,
    /// The signed number as written ("-1.5"), without the suffix.
    value: &'a [u8],
    /// Integer digits without leading zeros ("0" when there are none).
    num: &'a [u8],
    /// Fraction digits as written.
    denom: &'a [u8],
    suffix: &'a [u8],
}

fn scan(s: &[u8]) -> Result<Scanned<'_>, QuantityError> {
    const ZERO: &[u8] = b"0";
    let end = s.len();
    let mut pos = 0;
    let mut positive = true;
    match s.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    while pos < end && s[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Ok(Scanned {
            positive,
            value: ZERO,
            num: ZERO,
            denom: &[],
            suffix: &[],
        });
    }
    let num_start = pos;
    while pos < end && s[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = if pos == num_start {
        ZERO
    } else {
        &s[num_start..pos]
    };
    if pos >= end {
        return Ok(Scanned {
            positive,
            value: s,
            num,
            denom: &[],
            suffix: &[],
        });
    }
    let mut denom: &[u8] = &[];
    if s[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        while pos < end && s[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[denom_start..pos];
        if pos >= end {
            return Ok(Scanned {
                positive,
                value: s,
                num,
                denom,
                suffix: &[],
            });
        }
    }
    let value = &s[..pos];
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&s[pos]) {
        pos += 1;
    }
    if pos < end && (s[pos] == b'-' || s[pos] == b'+') {
        pos += 1;
    }
    while pos < end && s[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(QuantityError::Format);
    }
    Ok(Scanned {
        positive,
        value,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// apimachinery's `suffixHandler.interpret`: (base, exponent, format).
fn interpret(suffix: &[u8]) -> Option<(u32, i64, Format)> {
    let decimal = match suffix {
        b"n" => Some(-9),
        b"u" => Some(-6),
        b"m" => Some(-3),
        b"" => Some(0),
        b"k" => Some(3),
        b"M" => Some(6),
        b"G" => Some(9),
        b"T" => Some(12),
        b"P" => Some(15),
        b"E" => Some(18),
        _ => None,
    };
    if let Some(exp) = decimal {
        return Some((10, exp, Format::DecimalSi));
    }
    let binary = match suffix {
        b"Ki" => Some(10),
        b"Mi" => Some(20),
        b"Gi" => Some(30),
        b"Ti" => Some(40),
        b"Pi" => Some(50),
        b"Ei" => Some(60),
        _ => None,
    };
    if let Some(exp) = binary {
        return Some((2, exp, Format::BinarySi));
    }
    match suffix.split_first() {
        Some((b'e' | b'E', rest)) if !rest.is_empty() => {
            let parsed: i64 = std::str::from_utf8(rest).ok()?.parse().ok()?;
            // Kubernetes keeps the exponent as an int32 (`int32(parsed)`), wrapping.
            Some((10, i64::from(parsed as i32), Format::DecimalExponent))
        }
        _ => None,
    }
}

/// Multiplies a big-endian decimal digit string by 2^exp (exp <= 60).
fn mul_pow2(digits: &[u8], exp: u32) -> Vec<u8> {
    let factor = 1u128 << exp;
    let mut out = Vec::with_capacity(digits.len() + 20);
    let mut carry = 0u128;
    for &d in digits.iter().rev() {
        let x = u128::from(d) * factor + carry;
        out.push((x % 10) as u8);
        carry = x / 10;
    }
    while carry > 0 {
        out.push((carry % 10) as u8);
        carry /= 10;
    }
    out.reverse();
    out
}

/// `digits * 10^shift`, rounded away from zero to an integer, saturating at `MAX_NANOS`.
/// `digits` are values 0..=9, big-endian, without leading zeros, not all zero.
fn scale_round_up(digits: &[u8], shift: i64) -> u128 {
    let (int_part, fraction) = if shift >= 0 {
        (digits, &[][..])
    } else {
        let cut = digits
            .len()
            .saturating_sub(usize::try_from(-shift).unwrap_or(usize::MAX));
        digits.split_at(cut)
    };
    let mut acc = 0u128;
    for &d in int_part {
        acc = match acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(u128::from(d)))
        {
            Some(a) => a,
            None => return MAX_NANOS,
        };
    }
    if shift > 0 {
        if shift > 40 {
            return MAX_NANOS;
        }
        for _ in 0..shift {
            acc = match acc.checked_mul(10) {
                Some(a) => a,
                None => return MAX_NANOS,
            };
        }
    }
    if fraction.iter().any(|&d| d != 0) {
        acc = acc.saturating_add(1);
    }
    acc.min(MAX_NANOS)
}

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let sc = scan(s.as_bytes())?;
        let (base, exponent, format) = interpret(sc.suffix).ok_or(QuantityError::Suffix)?;

        // Which of ParseQuantity's two paths Kubernetes takes: only the slow one
        // (inf.Dec.SetString) refuses a number without any digit.
        let digit_count = (sc.num.len() + sc.denom.len()) as i64;
        let precision = match format {
            Format::DecimalExponent | Format::DecimalSi => 18 - digit_count,
            Format::BinarySi if sc.denom.is_empty() => {
                15 - sc.num.len() as i64 - exponent * 3 / 10 - 1
            }
            Format::BinarySi => -1,
        };
        let scale = (if base == 10 { exponent } else { 0 }) - sc.denom.len() as i64;
        let fast_path = precision >= 0 && scale >= -9;
        if !fast_path && !sc.value.iter().any(u8::is_ascii_digit) {
            return Err(QuantityError::Numeric);
        }

        let all: Vec<u8> = sc.num.iter().chain(sc.denom).map(|b| b - b'0').collect();
        let Some(first) = all.iter().position(|&d| d != 0) else {
            return Ok(Quantity { nanos: 0 });
        };
        let digits = &all[first..];
        let magnitude = if base == 2 {
            // Binary exponents are 10..=60, known from the table.
            let shifted = mul_pow2(digits, exponent as u32);
            scale_round_up(&shifted, 9 - sc.denom.len() as i64).min(MAX_BINARY_NANOS)
        } else {
            scale_round_up(digits, exponent.saturating_add(9 - sc.denom.len() as i64))
        };
        // MAX_NANOS is i128::MAX, so the conversion never fails.
        let magnitude = i128::try_from(magnitude).unwrap_or(i128::MAX);
        Ok(Quantity {
            nanos: if sc.positive { magnitude } else { -magnitude },
        })
    }

    /// Value in milli-units rounded up (as Kubernetes' MilliValue): "100m" -> 100, "1" -> 1000.
    pub fn milli_value(&self) -> i64 {
        scaled_round_up(self.nanos, 1_000_000)
    }

    /// Value in whole units rounded up (as Kubernetes' Value): "200Mi" -> 209715200.
    pub fn value(&self) -> i64 {
        scaled_round_up(self.nanos, NANOS_PER_UNIT)
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// `nanos / divisor` rounded away from zero (as int64Amount.AsScaledInt64), saturating at the
/// i64 bounds where Kubernetes would overflow.
fn scaled_round_up(nanos: i128, divisor: i128) -> i64 {
    let mut q = nanos / divisor;
    if nanos % divisor != 0 {
        q += nanos.signum();
    }
    i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX })
}

/// CFS quota in microseconds for a CPU limit in millicores, per `CPU_PERIOD_US` (kubelet:
/// milli * 100000 / 1000, at least 1000).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kubelet's minimum CFS quota (1 ms).
pub const MIN_QUOTA_US: i64 = 1000;
/// cgroup v1 cpu.shares bounds used by the kubelet.
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;

/// The kubelet's milliCPUToQuota: 0 (no limit) stays 0.
pub fn cpu_quota_us(limit_milli: i64) -> i64 {
    if limit_milli == 0 {
        return 0;
    }
    let quota = limit_milli.saturating_mul(CPU_PERIOD_US as i64) / 1000;
    quota.max(MIN_QUOTA_US)
}

/// cgroup cpu shares for a CPU request in millicores (kubelet: milli * 1024 / 1000, 2..=262144).
pub fn cpu_shares(request_milli: i64) -> u64 {
    if request_milli == 0 {
        return MIN_SHARES;
    }
    let shares = request_milli.saturating_mul(1024) / 1000;
    if shares < MIN_SHARES as i64 {
        MIN_SHARES
    } else {
        (shares as u64).min(MAX_SHARES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: i128 = 1;
    const U: i128 = 1_000_000_000;
    const KI: i128 = 1024 * U;
    const MI: i128 = 1024 * KI;
    const GI: i128 = 1024 * MI;

    #[test]
    fn parses_like_kubernetes() {
        let table: &[(&str, i128)] = &[
            ("0", 0),
            ("0n", 0),
            ("0Ki", 0),
            ("0Ti", 0),
            ("1", U),
            ("100m", 100_000_000),
            ("1.5", 1_500_000_000),
            ("+1.5", 1_500_000_000),
            ("-1", -U),
            ("-1.5m", -1_500_000),
            ("007", 7 * U),
            ("5n", 5 * N),
            ("4u", 4_000),
            ("3m", 3_000_000),
            ("2k", 2_000 * U),
            ("50k", 50_000 * U),
            ("7M", 7_000_000 * U),
            ("6G", 6_000_000_000 * U),
            ("5T", 5_000_000_000_000 * U),
            ("2P", 2_000_000_000_000_000 * U),
            ("1E", 1_000_000_000_000_000_000 * U),
            ("12E", 12_000_000_000_000_000_000 * U),
            ("1Ki", KI),
            ("200Mi", 200 * MI),
            ("1.5Gi", 3 * GI / 2),
            ("6Gi", 6 * GI),
            ("5Ti", 5 * 1024 * GI),
            ("4Pi", 4 * 1024 * 1024 * GI),
            ("3Ei", 3 * 1024 * 1024 * 1024 * GI),
            ("100.035Ki", 102_435_840_000_000),
            ("0.5Mi", 512 * KI),
            ("1e3", 1_000 * U),
            ("1E-3", 1_000_000),
            ("1.3E+6", 1_300_000 * U),
            ("1.2e3", 1_200 * U),
            ("0.5e-2", 5_000_000),
            ("10.035M", 10_035_000 * U),
            ("6.987654321G", 6_987_654_321 * U),
            (".001", 1_000_000),
            (".0001k", 100_000_000),
            ("1.", U),
            ("1.G", 1_000_000_000 * U),
            // Rounded up to the nano, away from zero.
            ("3.001n", 4),
            ("1.1E-9", 2),
            ("0.0000000001", 1),
            ("0.9n", 1),
            ("-0.9n", -1),
            ("0.00000012345", 124),
            ("1e-100", 1),
            ("0.000000000001Ki", 2),
            // Number-less strings Kubernetes accepts as zero.
            (".", 0),
            ("-", 0),
            ("-.", 0),
            ("Mi", 0),
            ("e-9", 0),
            // Binary quantities are capped at 2^63-1.
            ("9Ei", i128::from(i64::MAX) * U),
            ("9223372036854775807Ki", i128::from(i64::MAX) * U),
            // Decimal ones saturate far out.
            ("1e40", i128::MAX),
            ("99999999999999999999999999999999999999999999", i128::MAX),
        ];
        for (input, nanos) in table {
            assert_eq!(
                Quantity::parse(input),
                Ok(Quantity { nanos: *nanos }),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_like_kubernetes() {
        use QuantityError::*;
        let table: &[(&str, QuantityError)] = &[
            ("", Format),
            ("1.2.3", Format),
            ("1.1.M", Format),
            ("1+1.0M", Format),
            (" 1", Format),
            ("1 ", Format),
            ("1 Mi", Format),
            ("1iB", Format),
            ("aoeu", Format),
            ("0.1am", Format),
            ("-3.01e-", Suffix),
            ("0.1mi", Suffix),
            (".5i", Suffix),
            ("1i", Suffix),
            ("-3.01i", Suffix),
            ("1Mb", Format),
            ("1e", Suffix),
            ("1ee3", Suffix),
            ("1Ki3", Suffix),
            ("1e99999999999999999999", Suffix),
            ("Ei", Numeric),
            ("-Pi", Numeric),
            ("e-10", Numeric),
            ("1µ", Format),
        ];
        for (input, err) in table {
            assert_eq!(Quantity::parse(input).as_ref(), Err(err), "{input}");
        }
    }

    #[test]
    fn milli_and_whole_values_round_up() {
        let table: &[(&str, i64, i64)] = &[
            ("100m", 100, 1),
            ("1", 1000, 1),
            ("1.5m", 2, 1),
            ("0.1", 100, 1),
            ("1.0001", 1001, 2),
            ("200Mi", 209_715_200_000, 209_715_200),
            ("1.5Gi", 1_610_612_736_000, 1_610_612_736),
            ("2k", 2_000_000, 2000),
            ("1e3", 1_000_000, 1000),
            ("-1", -1000, -1),
            ("-1.5m", -2, -1),
            ("0", 0, 0),
            ("1n", 1, 1),
            ("9Ei", i64::MAX, i64::MAX),
            ("-1e30", i64::MIN, i64::MIN),
        ];
        for (input, milli, value) in table {
            let q = Quantity::parse(input).expect(input);
            assert_eq!(q.milli_value(), *milli, "milli {input}");
            assert_eq!(q.value(), *value, "value {input}");
        }
    }

    #[test]
    fn cpu_quota_follows_the_kubelet() {
        let table: &[(i64, i64)] = &[
            (0, 0),
            (100, 10_000),
            (1000, 100_000),
            (1500, 150_000),
            (1, 1000),
            (5, 1000),
            (10, 1000),
            (11, 1100),
            (-5, 1000),
        ];
        for (milli, quota) in table {
            assert_eq!(cpu_quota_us(*milli), *quota, "{milli}");
        }
        let from_string = Quantity::parse("100m").expect("valid").milli_value();
        assert_eq!(cpu_quota_us(from_string), 10_000);
    }

    #[test]
    fn cpu_shares_follow_the_kubelet() {
        let table: &[(i64, u64)] = &[
            (0, 2),
            (1, 2),
            (2, 2),
            (3, 3),
            (100, 102),
            (250, 256),
            (1000, 1024),
            (256_000, 262_144),
            (300_000, 262_144),
            (i64::MAX, 262_144),
            (-1000, 2),
        ];
        for (milli, shares) in table {
            assert_eq!(cpu_shares(*milli), *shares, "{milli}");
        }
    }
}
