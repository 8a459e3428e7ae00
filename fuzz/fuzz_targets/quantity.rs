//! Resource quantities (`core::quantity`) as they come in pod specs and the agent's config: the
//! parse, the rounded values, and the cgroup CPU figures the runtime derives from them.
#![no_main]

use daemonset_agent::core::quantity::{self, Quantity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = Quantity::parse(s) else {
        return;
    };
    let milli = q.milli_value();
    let units = q.value();
    assert_eq!(
        q.is_zero(),
        milli == 0,
        "{s:?}: is_zero disagrees with milli_value"
    );
    assert_eq!(
        q.is_zero(),
        units == 0,
        "{s:?}: is_zero disagrees with value"
    );
    let quota = quantity::cpu_quota_us(milli);
    assert!(
        quota == 0 || quota >= quantity::MIN_QUOTA_US,
        "{s:?}: quota {quota}"
    );
    let shares = quantity::cpu_shares(milli);
    assert!(
        (quantity::MIN_SHARES..=quantity::MAX_SHARES).contains(&shares),
        "{s:?}: shares {shares}"
    );
});
