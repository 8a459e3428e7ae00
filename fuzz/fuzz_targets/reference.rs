//! Image references (`core::reference`) as pod specs carry them: parsed and normalized; the
//! normalized form parses back to itself (it is what the agent pulls and records).
#![no_main]

use daemonset_agent::core::reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = reference::parse(s) {
        let normalized = r.to_string();
        let again = reference::parse(&normalized)
            .unwrap_or_else(|e| panic!("{s:?} normalized to {normalized:?}, which fails: {e}"));
        assert_eq!(r, again, "{s:?} normalized to {normalized:?}");
    }
});
