//! Hashes naming revisions: the pod template hash (`controller-revision-hash`, ControllerRevision
//! `<ds>-<hash>`).
//!
//! Shaped like Kubernetes' `controller.ComputeHash`: FNV-32a, the collision count appended, the
//! decimal sum rendered with `rand.SafeEncodeString`. Kubernetes hashes a Go `spew` dump of the
//! template, which Rust cannot reproduce; we hash its JSON instead, so the values are stable for
//! this project but differ from the ones a Kubernetes controller computes for the same template.
use k8s_openapi::api::core::v1::PodTemplateSpec;

const FNV32_OFFSET: u32 = 2_166_136_261;
const FNV32_PRIME: u32 = 16_777_619;
/// Kubernetes' `rand` alphabet: no vowels, no 0/1/3, so hashes never spell words.
const SAFE_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-32a over the template's canonical JSON (and the collision count when set), rendered with
/// Kubernetes' SafeEncodeString alphabet, as ComputeHash does.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // Serializing k8s-openapi types cannot fail (string-keyed maps only); should it ever, the
    // Debug form is just as deterministic.
    let json =
        serde_json::to_vec(template).unwrap_or_else(|_| format!("{template:?}").into_bytes());
    let mut hash = fnv32a_update(FNV32_OFFSET, &json);
    if let Some(count) = collision_count {
        hash = fnv32a_update(hash, &count.to_le_bytes());
    }
    safe_encode(&hash.to_string())
}

/// 32-bit FNV-1a of `bytes`.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    fnv32a_update(FNV32_OFFSET, bytes)
}

fn fnv32a_update(mut hash: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(FNV32_PRIME);
    }
    hash
}

/// Kubernetes' `rand.SafeEncodeString`: each character mapped into the safe alphabet.
pub fn safe_encode(s: &str) -> String {
    s.chars()
        .map(|c| char::from(SAFE_ALPHABET[c as usize % SAFE_ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str, labels: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": labels},
            "spec": {
                "containers": [{
                    "name": "exporter",
                    "image": image,
                    "args": ["--path.rootfs=/host"],
                    "resources": {"limits": {"cpu": "100m", "memory": "200Mi"}},
                }],
                "hostNetwork": true,
                "nodeSelector": {"node-role.kubernetes.io/worker": "true", "kubernetes.io/os": "linux"},
            },
        }))
        .expect("valid template")
    }

    #[test]
    fn fnv32a_reference_vectors() {
        let table: &[(&[u8], u32)] = &[
            (b"", 0x811c_9dc5),
            (b"a", 0xe40c_292c),
            (b"foobar", 0xbf9c_f968),
        ];
        for (input, want) in table {
            assert_eq!(fnv32a(input), *want, "{input:?}");
        }
    }

    #[test]
    fn safe_encoding_matches_kubernetes_alphabet() {
        let table = [
            ("0123456789", "456789bcdf"),
            ("", ""),
            ("2166136261", "65bb57b6b5"),
        ];
        for (input, want) in table {
            assert_eq!(safe_encode(input), want, "{input:?}");
        }
    }

    #[test]
    fn empty_template_hash_vectors() {
        // Computed independently: FNV-32a of b"{}" (+ count LE) then SafeEncodeString.
        let empty = PodTemplateSpec::default();
        let table = [
            (None, "5859f96865"),
            (Some(1), "6746d4fc44"),
            (Some(-1), "b64fdb7d9"),
        ];
        for (count, want) in table {
            assert_eq!(template_hash(&empty, count), want, "{count:?}");
        }
    }

    #[test]
    fn hash_follows_the_template() {
        let base = template("prom/node-exporter:v1.8.0", json!({"app": "node-exporter"}));
        let h = template_hash(&base, None);
        let table = [
            (
                "equal template",
                template("prom/node-exporter:v1.8.0", json!({"app": "node-exporter"})),
                None,
                true,
            ),
            (
                "image changed",
                template("prom/node-exporter:v1.8.1", json!({"app": "node-exporter"})),
                None,
                false,
            ),
            (
                "label changed",
                template("prom/node-exporter:v1.8.0", json!({"app": "other"})),
                None,
                false,
            ),
            ("collision count 0", base.clone(), Some(0), false),
            ("collision count 1", base.clone(), Some(1), false),
        ];
        for (name, t, count, same) in table {
            assert_eq!(template_hash(&t, count) == h, same, "{name}");
        }
        assert_ne!(template_hash(&base, Some(1)), template_hash(&base, Some(2)));
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
    }
}
