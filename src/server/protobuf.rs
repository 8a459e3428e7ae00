//! Just enough of the Kubernetes protobuf encoding to accept what kubectl's typed clients send
//! as protobuf: `kubectl create namespace NAME` (a `k8s\0` envelope around a runtime.Unknown
//! holding a v1.Namespace), `kubectl create configmap|secret|serviceaccount`, the access reviews
//! of `kubectl auth`, and what `kubectl drain` and `kubectl delete` send: a meta/v1 `DeleteOptions`
//! body and a policy/v1 `Eviction`. Every other protobuf body is refused with 415.
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    #[error("protobuf body is truncated or malformed")]
    Malformed,
    #[error("protobuf bodies of kind {0:?} are not supported: send application/json")]
    Unsupported(String),
}

const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    /// A fixed-width scalar (skipped: no field read here needs one).
    Fixed,
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(ProtobufError::Malformed)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtobufError::Malformed)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ProtobufError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Malformed)?;
                if len > self.buf.len() {
                    return Err(ProtobufError::Malformed);
                }
                let (data, rest) = self.buf.split_at(len);
                self.buf = rest;
                Field::Bytes(data)
            }
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
            }
            _ => return Err(ProtobufError::Malformed),
        };
        Ok(Some((key >> 3, field)))
    }

    fn skip(&mut self, n: usize) -> Result<(), ProtobufError> {
        if n > self.buf.len() {
            return Err(ProtobufError::Malformed);
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

fn string(b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::Malformed)
}

fn map_entry(b: &[u8]) -> Result<(String, String), ProtobufError> {
    let mut r = Reader { buf: b };
    let (mut k, mut v) = (String::new(), String::new());
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) => v = string(x)?,
            _ => {}
        }
    }
    Ok((k, v))
}

/// ObjectMeta: name (1), generateName (2), namespace (3), labels (11), annotations (12).
fn object_meta(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut r = Reader { buf: b };
    let mut meta = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    while let Some((tag, f)) = r.next()? {
        if let Field::Bytes(x) = f {
            match tag {
                1 => {
                    meta.insert("name".into(), json!(string(x)?));
                }
                2 => {
                    meta.insert("generateName".into(), json!(string(x)?));
                }
                3 => {
                    meta.insert("namespace".into(), json!(string(x)?));
                }
                11 => {
                    let (k, v) = map_entry(x)?;
                    labels.insert(k, json!(v));
                }
                12 => {
                    let (k, v) = map_entry(x)?;
                    annotations.insert(k, json!(v));
                }
                _ => {}
            }
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(meta))
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::Malformed)?;
    let mut r = Reader { buf: rest };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(tm)) => {
                let mut t = Reader { buf: tm };
                while let Some((tag, f)) = t.next()? {
                    match (tag, f) {
                        (1, Field::Bytes(x)) => api_version = string(x)?,
                        (2, Field::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    if let Some(obj) = config_kind(&api_version, &kind, raw)? {
        return Ok(obj);
    }
    let access_review = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") | ("authentication.k8s.io/v1", "SelfSubjectReview") => false,
        // kubectl auth can-i
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => true,
        // a typed client's DELETE body, in the group version of its client (v1 for pods)
        (_, "DeleteOptions") => {
            let mut opts = delete_options(raw)?;
            opts["apiVersion"] = json!(api_version);
            opts["kind"] = json!(kind);
            return Ok(opts);
        }
        // kubectl drain
        ("policy/v1" | "policy/v1beta1", "Eviction") => return eviction(&api_version, raw),
        // kubectl create token
        ("authentication.k8s.io/v1", "TokenRequest") => return token_request(raw),
        _ => return Err(ProtobufError::Unsupported(format!("{api_version}/{kind}"))),
    };
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    let mut r = Reader { buf: raw };
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(x)) if access_review => obj["spec"] = access_review_spec(x)?,
            _ => {}
        }
    }
    Ok(obj)
}

/// meta/v1 DeleteOptions: gracePeriodSeconds (1, int64), preconditions (2: uid 1,
/// resourceVersion 2), orphanDependents (3, bool), propagationPolicy (4), dryRun (5, repeated).
fn delete_options(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    let mut dry_run = Vec::new();
    let mut r = Reader { buf: b };
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            // int64 is a two's complement varint
            (1, Field::Varint(v)) => {
                out.insert("gracePeriodSeconds".into(), json!(v as i64));
            }
            (2, Field::Bytes(x)) => {
                const PRECONDITIONS: &[(u64, &str)] = &[(1, "uid"), (2, "resourceVersion")];
                out.insert("preconditions".into(), strings(x, PRECONDITIONS)?);
            }
            (3, Field::Varint(v)) => {
                out.insert("orphanDependents".into(), json!(v != 0));
            }
            (4, Field::Bytes(x)) => {
                out.insert("propagationPolicy".into(), json!(string(x)?));
            }
            (5, Field::Bytes(x)) => dry_run.push(json!(string(x)?)),
            _ => {}
        }
    }
    if !dry_run.is_empty() {
        out.insert("dryRun".into(), Value::Array(dry_run));
    }
    Ok(Value::Object(out))
}

/// policy/v1 Eviction: metadata (1), deleteOptions (2).
fn eviction(api_version: &str, b: &[u8]) -> Result<Value, ProtobufError> {
    let mut obj = json!({"apiVersion": api_version, "kind": "Eviction"});
    let mut r = Reader { buf: b };
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(x)) => obj["deleteOptions"] = delete_options(x)?,
            _ => {}
        }
    }
    Ok(obj)
}

/// authentication/v1 TokenRequest: metadata (1), spec (2: audiences 1, boundObjectRef 3 (kind 1,
/// apiVersion 2, name 3, uid 4), expirationSeconds 4).
fn token_request(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut obj =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    let mut r = Reader { buf: b };
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(x)) => {
                let mut audiences = Vec::new();
                let mut spec = Reader { buf: x };
                while let Some((tag, f)) = spec.next()? {
                    match (tag, f) {
                        (1, Field::Bytes(a)) => audiences.push(json!(string(a)?)),
                        (3, Field::Bytes(o)) => {
                            const REF: &[(u64, &str)] =
                                &[(1, "kind"), (2, "apiVersion"), (3, "name"), (4, "uid")];
                            obj["spec"]["boundObjectRef"] = strings(o, REF)?;
                        }
                        (4, Field::Varint(v)) => obj["spec"]["expirationSeconds"] = json!(v as i64),
                        _ => {}
                    }
                }
                obj["spec"]["audiences"] = Value::Array(audiences);
            }
            _ => {}
        }
    }
    Ok(obj)
}

/// What `kubectl create configmap|secret|serviceaccount` sends: ConfigMap (data 2, binaryData 3),
/// Secret (data 2, type 3, stringData 4), ServiceAccount (imagePullSecrets 3); metadata is 1.
/// None: another kind.
fn config_kind(api_version: &str, kind: &str, raw: &[u8]) -> Result<Option<Value>, ProtobufError> {
    use base64::Engine as _;
    let b64 = |x: &[u8]| json!(base64::engine::general_purpose::STANDARD.encode(x));
    let text = |x: &[u8]| string(x).map(|s| json!(s));
    // (tag, field, map values are bytes)
    let maps: &[(u64, &str, bool)] = match (api_version, kind) {
        ("v1", "ConfigMap") => &[(2, "data", false), (3, "binaryData", true)],
        ("v1", "Secret") => &[(2, "data", true), (4, "stringData", false)],
        ("v1", "ServiceAccount") => &[],
        _ => return Ok(None),
    };
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    let mut r = Reader { buf: raw };
    while let Some((tag, f)) = r.next()? {
        let Field::Bytes(x) = f else { continue };
        if tag == 1 {
            obj["metadata"] = object_meta(x)?;
        } else if let Some((_, name, bytes)) = maps.iter().find(|(t, _, _)| *t == tag) {
            let mut e = Reader { buf: x };
            let (mut k, mut v) = (String::new(), json!(""));
            while let Some((t, f)) = e.next()? {
                match (t, f) {
                    (1, Field::Bytes(y)) => k = string(y)?,
                    (2, Field::Bytes(y)) => v = if *bytes { b64(y) } else { text(y)? },
                    _ => {}
                }
            }
            if obj.get(*name).is_none() {
                obj[*name] = json!({});
            }
            obj[*name][k] = v;
        } else if kind == "Secret" && tag == 3 {
            obj["type"] = text(x)?;
        } else if kind == "ServiceAccount" && tag == 3 {
            let name = strings(x, &[(1, "name")])?;
            match obj
                .get_mut("imagePullSecrets")
                .and_then(Value::as_array_mut)
            {
                Some(list) => list.push(name),
                None => obj["imagePullSecrets"] = json!([name]),
            }
        }
    }
    Ok(Some(obj))
}

/// A message of string fields, named by tag.
fn strings(b: &[u8], names: &[(u64, &str)]) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((tag, f)) = r.next()? {
        if let (Some((_, name)), Field::Bytes(x)) = (names.iter().find(|(t, _)| *t == tag), f) {
            out.insert((*name).into(), json!(string(x)?));
        }
    }
    Ok(Value::Object(out))
}

/// SelfSubjectAccessReviewSpec: resourceAttributes (1), nonResourceAttributes (2).
fn access_review_spec(b: &[u8]) -> Result<Value, ProtobufError> {
    const RESOURCE: &[(u64, &str)] = &[
        (1, "namespace"),
        (2, "verb"),
        (3, "group"),
        (4, "version"),
        (5, "resource"),
        (6, "subresource"),
        (7, "name"),
    ];
    const NON_RESOURCE: &[(u64, &str)] = &[(1, "path"), (2, "verb")];
    let mut spec = Map::new();
    let mut r = Reader { buf: b };
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(x)) => {
                spec.insert("resourceAttributes".into(), strings(x, RESOURCE)?);
            }
            (2, Field::Bytes(x)) => {
                spec.insert("nonResourceAttributes".into(), strings(x, NON_RESOURCE)?);
            }
            _ => {}
        }
    }
    Ok(Value::Object(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(tag: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![(tag << 3) | 2, data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn decodes_a_namespace_and_refuses_the_rest() {
        let mut labels = field(1, b"team");
        labels.extend(field(2, b"a"));
        let mut meta = field(1, b"x1");
        meta.extend(field(11, &labels));
        let ns = field(1, &meta);
        let mut type_meta = field(1, b"v1");
        type_meta.extend(field(2, b"Namespace"));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &type_meta));
        body.extend(field(2, &ns));
        body.extend(field(4, b"application/vnd.kubernetes.protobuf"));
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x1", "labels": {"team": "a"}}})
        );
        let mut other = MAGIC.to_vec();
        let mut tm = field(1, b"v1");
        tm.extend(field(2, b"Pod"));
        other.extend(field(1, &tm));
        assert_eq!(
            decode(&other),
            Err(ProtobufError::Unsupported("v1/Pod".into()))
        );
        for bad in [&b"k8s"[..], b"k8s\0\x0a\x7f", b"k8s\0\xff\xff\xff"] {
            assert!(decode(bad).is_err());
        }
    }

    fn varint(tag: u8, mut v: u64) -> Vec<u8> {
        let mut out = vec![tag << 3];
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn envelope(api_version: &[u8], kind: &[u8], raw: &[u8]) -> Vec<u8> {
        let mut tm = field(1, api_version);
        tm.extend(field(2, kind));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &tm));
        body.extend(field(2, raw));
        body
    }

    /// What `kubectl delete --grace-period=30` and `kubectl drain` send (client-go's protobuf
    /// encoding of meta/v1 DeleteOptions, and of a policy/v1 Eviction holding one).
    #[test]
    fn decodes_delete_options_and_evictions() {
        let mut opts = varint(1, 30);
        let mut pre = field(1, b"u-1");
        pre.extend(field(2, b"7"));
        opts.extend(field(2, &pre));
        opts.extend(field(4, b"Foreground"));
        opts.extend(field(5, b"All"));
        opts.extend(varint(3, 0));
        assert_eq!(
            decode(&envelope(b"v1", b"DeleteOptions", &opts)).unwrap(),
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 30,
                   "preconditions": {"uid": "u-1", "resourceVersion": "7"},
                   "orphanDependents": false, "propagationPolicy": "Foreground",
                   "dryRun": ["All"]})
        );
        // a negative grace period is a ten-byte varint
        let negative = varint(1, (-1i64) as u64);
        assert_eq!(negative.len(), 11);
        let opts = decode(&envelope(b"v1", b"DeleteOptions", &negative)).unwrap();
        assert_eq!(opts["gracePeriodSeconds"], -1);
        let mut meta = field(1, b"web-1");
        meta.extend(field(3, b"default"));
        let mut ev = field(1, &meta);
        ev.extend(field(2, &varint(1, 0)));
        assert_eq!(
            decode(&envelope(b"policy/v1", b"Eviction", &ev)).unwrap(),
            json!({"apiVersion": "policy/v1", "kind": "Eviction",
                   "metadata": {"name": "web-1", "namespace": "default"},
                   "deleteOptions": {"gracePeriodSeconds": 0}})
        );
        // an empty DeleteOptions (kubectl delete without flags)
        assert_eq!(
            decode(&envelope(b"v1", b"DeleteOptions", b"")).unwrap(),
            json!({"apiVersion": "v1", "kind": "DeleteOptions"})
        );
    }

    #[test]
    fn decodes_what_kubectl_create_configmap_and_secret_send() {
        let entry = |k: &[u8], v: &[u8]| {
            let mut e = field(1, k);
            e.extend(field(2, v));
            e
        };
        let envelope = |kind: &[u8], raw: Vec<u8>| {
            let mut tm = field(1, b"v1");
            tm.extend(field(2, kind));
            let mut body = MAGIC.to_vec();
            body.extend(field(1, &tm));
            body.extend(field(2, &raw));
            body
        };
        let mut cm = field(1, &field(1, b"app"));
        cm.extend(field(2, &entry(b"level", b"info")));
        cm.extend(field(3, &entry(b"bin", &[0, 1])));
        assert_eq!(
            decode(&envelope(b"ConfigMap", cm)).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
                "data": {"level": "info"}, "binaryData": {"bin": "AAE="}})
        );
        let mut secret = field(1, &field(1, b"s"));
        secret.extend(field(2, &entry(b"pw", b"hunter2")));
        secret.extend(field(3, b"kubernetes.io/basic-auth"));
        assert_eq!(
            decode(&envelope(b"Secret", secret)).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"pw": "aHVudGVyMg=="}, "type": "kubernetes.io/basic-auth"})
        );
        let mut sa = field(1, &field(1, b"sa"));
        sa.extend(field(3, &field(1, b"pull")));
        assert_eq!(
            decode(&envelope(b"ServiceAccount", sa)).unwrap(),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
                "imagePullSecrets": [{"name": "pull"}]})
        );
    }

    /// What `kubectl create token sa --duration 10m --bound-object-kind Pod ...` sends.
    #[test]
    fn decodes_a_token_request() {
        let mut bound = field(1, b"Pod");
        bound.extend(field(2, b"v1"));
        bound.extend(field(3, b"p"));
        bound.extend(field(4, b"u-1"));
        let mut spec = field(1, b"vault");
        spec.extend(field(3, &bound));
        spec.extend(varint(4, 600));
        let mut raw = field(1, &field(1, b"sa"));
        raw.extend(field(2, &spec));
        assert_eq!(
            decode(&envelope(
                b"authentication.k8s.io/v1",
                b"TokenRequest",
                &raw
            ))
            .unwrap(),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": "sa"},
                "spec": {"audiences": ["vault"], "expirationSeconds": 600,
                    "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u-1"}}})
        );
    }

    #[test]
    fn decodes_the_reviews_kubectl_auth_sends() {
        let mut attrs = field(2, b"patch");
        attrs.extend(field(5, b"nodes"));
        attrs.extend(field(7, b"b"));
        let spec = field(1, &attrs);
        let mut raw = field(1, b"");
        raw.extend(field(2, &spec));
        let mut tm = field(1, b"authorization.k8s.io/v1");
        tm.extend(field(2, b"SelfSubjectAccessReview"));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &tm));
        body.extend(field(2, &raw));
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "metadata": {},
                   "spec": {"resourceAttributes": {"verb": "patch", "resource": "nodes", "name": "b"}}})
        );
        let mut tm = field(1, b"authentication.k8s.io/v1");
        tm.extend(field(2, b"SelfSubjectReview"));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &tm));
        assert_eq!(decode(&body).unwrap()["kind"], "SelfSubjectReview");
    }
}
