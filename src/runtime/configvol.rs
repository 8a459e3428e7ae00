//! ConfigMaps, Secrets and service account tokens in a pod, as the kubelet serves them: the
//! `configMap`, `secret` and `projected` volumes (pkg/volume/configmap, secret, projected:
//! MakePayload with items, modes and `optional`), the env of `valueFrom.configMapKeyRef` /
//! `secretKeyRef` and `envFrom` (kubelet_pods.go: makeEnvironmentVariables), and the kubelet's
//! AtomicWriter (pkg/volume/util/atomic_writer.go): a volume's files live in a timestamped
//! directory that the `..data` symlink names, swapped by a rename, so a reader never sees half an
//! update and a changed ConfigMap reaches a mounted volume whole. The objects are fetched by the
//! agent (`agent::configsource`); all but [`write_atomic`] is pure.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeSource, EnvVar, KeyToPath, Volume};

use super::downward::{self, PodFacts};
use crate::core::names;

/// An object's data, by key, as bytes (a ConfigMap's `data` and `binaryData` together).
pub type Data = BTreeMap<String, Vec<u8>>;

/// The API objects a pod's volumes and env read, as the agent found them (in the pod's
/// namespace). A name the pod uses that is not here was not looked up.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PodObjects {
    /// ConfigMaps by name (None: not found).
    pub config_maps: BTreeMap<String, Option<ConfigMapData>>,
    /// Secrets by name (None: not found).
    pub secrets: BTreeMap<String, Option<Data>>,
    /// Service account tokens by audience ("" the API server's own).
    pub tokens: BTreeMap<String, String>,
    /// The API server's CA (PEM), the `ca.crt` of the service account volume.
    pub ca_crt: Vec<u8>,
}

/// A ConfigMap's two bags: envFrom reads only `data`; volumes read both.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ConfigMapData {
    pub data: BTreeMap<String, String>,
    pub binary: Data,
}

impl ConfigMapData {
    fn all(&self) -> Data {
        let mut out: Data = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        out.extend(self.binary.clone());
        out
    }
}

/// One file of a volume: its path inside the volume, content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The mode of a file whose source names none (`defaultMode`'s default, 0644).
pub const DEFAULT_MODE: u32 = 0o644;

/// Where the service account volume is mounted (`automountServiceAccountToken`).
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Whether `vol` is one of the volumes this module makes.
pub fn is_config_volume(vol: &Volume) -> bool {
    vol.config_map.is_some() || vol.secret.is_some() || vol.projected.is_some()
}

fn not_found(kind: &str, name: &str) -> String {
    format!("{kind} {name:?} not found")
}

/// `MakePayload`: the files of one source's `items` (or all its keys), `optional` as given.
fn payload(
    kind: &str,
    data: &Data,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
    out: &mut Vec<FileData>,
) -> Result<(), String> {
    match items.filter(|i| !i.is_empty()) {
        None => out.extend(data.iter().map(|(k, v)| FileData {
            path: k.clone(),
            data: v.clone(),
            mode: default_mode,
        })),
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(format!(
                        "{kind} references non-existent {} key: {}",
                        if kind == "configmap" {
                            "config"
                        } else {
                            "secret"
                        },
                        item.key
                    ));
                };
                out.push(FileData {
                    path: item.path.clone(),
                    data: v.clone(),
                    mode: item.mode.map_or(default_mode, |m| m as u32),
                });
            }
        }
    }
    Ok(())
}

/// One configMap or secret source: its payload, nothing when it is missing and optional.
fn source(
    kind: &str,
    name: &str,
    data: Option<&Data>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
    out: &mut Vec<FileData>,
) -> Result<(), String> {
    match data {
        Some(data) => payload(kind, data, items, default_mode, optional, out),
        None if optional => Ok(()),
        None => Err(not_found(kind, name)),
    }
}

fn config_map<'a>(o: &'a PodObjects, name: &str) -> Option<&'a ConfigMapData> {
    o.config_maps.get(name).and_then(Option::as_ref)
}

fn secret<'a>(o: &'a PodObjects, name: &str) -> Option<&'a Data> {
    o.secrets.get(name).and_then(Option::as_ref)
}

fn mode(m: Option<i32>) -> u32 {
    m.map_or(DEFAULT_MODE, |m| m as u32)
}

/// The files of a `configMap`, `secret` or `projected` volume (None for other volumes), or why it
/// cannot be set up (a missing object or key that is not optional, a token not yet issued).
pub fn volume_files(
    vol: &Volume,
    objects: &PodObjects,
    facts: &PodFacts,
) -> Result<Option<Vec<FileData>>, String> {
    let mut out = Vec::new();
    if let Some(src) = &vol.config_map {
        let data = config_map(objects, &src.name).map(ConfigMapData::all);
        let optional = src.optional == Some(true);
        let items = src.items.as_ref();
        source(
            "configmap",
            &src.name,
            data.as_ref(),
            items,
            mode(src.default_mode),
            optional,
            &mut out,
        )?;
    } else if let Some(src) = &vol.secret {
        let name = src.secret_name.as_deref().unwrap_or("");
        let optional = src.optional == Some(true);
        let items = src.items.as_ref();
        source(
            "secret",
            name,
            secret(objects, name),
            items,
            mode(src.default_mode),
            optional,
            &mut out,
        )?;
    } else if let Some(src) = &vol.projected {
        let default_mode = mode(src.default_mode);
        for p in src.sources.iter().flatten() {
            if let Some(s) = &p.config_map {
                let data = config_map(objects, &s.name).map(ConfigMapData::all);
                let optional = s.optional == Some(true);
                source(
                    "configmap",
                    &s.name,
                    data.as_ref(),
                    s.items.as_ref(),
                    default_mode,
                    optional,
                    &mut out,
                )?;
            }
            if let Some(s) = &p.secret {
                let optional = s.optional == Some(true);
                let data = secret(objects, &s.name);
                source(
                    "secret",
                    &s.name,
                    data,
                    s.items.as_ref(),
                    default_mode,
                    optional,
                    &mut out,
                )?;
            }
            if let Some(d) = &p.downward_api {
                let src = DownwardAPIVolumeSource {
                    default_mode: Some(default_mode as i32),
                    items: d.items.clone(),
                };
                out.extend(
                    downward::volume_files(&src, facts)?
                        .into_iter()
                        .map(|f| FileData {
                            path: f.path,
                            data: f.content.into_bytes(),
                            mode: f.mode,
                        }),
                );
            }
            if let Some(t) = &p.service_account_token {
                let audience = t.audience.as_deref().unwrap_or("");
                let token = objects.tokens.get(audience).ok_or_else(|| {
                    format!("no service account token issued yet for audience {audience:?}")
                })?;
                out.push(FileData {
                    path: t.path.clone(),
                    data: token.clone().into_bytes(),
                    mode: default_mode,
                });
            }
        }
    } else {
        return Ok(None);
    }
    for f in &out {
        check_path(&f.path)?;
    }
    Ok(Some(out))
}

/// A volume file's path: relative, no `..` element, not starting with `..` (the writer's own).
fn check_path(p: &str) -> Result<(), String> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.starts_with("..")
        || p.split('/').any(|e| e == ".." || e.is_empty());
    if bad {
        return Err(format!("invalid file path {p:?}"));
    }
    Ok(())
}

/// The registry credentials of the pod's imagePullSecrets (the `.dockerconfigjson` of each, in
/// order; the first to name a registry wins), and what could not be read of them (the kubelet
/// logs and pulls without). Missing Secrets are skipped, as the kubelet does.
pub fn pull_credentials(
    secrets: &[String],
    objects: &PodObjects,
) -> (super::pull::Credentials, Vec<String>) {
    let mut out = super::pull::Credentials::default();
    let mut problems = Vec::new();
    for name in secrets.iter().rev() {
        let Some(config) = secret(objects, name).and_then(|d| d.get(".dockerconfigjson")) else {
            problems.push(format!(
                "secret {name:?}: not found or no .dockerconfigjson"
            ));
            continue;
        };
        match super::pull::Credentials::parse(&String::from_utf8_lossy(config)) {
            Ok(c) => out = c.over(&out),
            Err(e) => problems.push(format!("secret {name:?}: {e}")),
        }
    }
    (out, problems)
}

/// `$` written as `$$`: a value from an object is never expanded (the kubelet expands only
/// `value`), and the downward API's expansion turns `$$` back into `$`.
fn literal(v: &str) -> String {
    v.replace('$', "$$")
}

/// The container with its env resolved as the kubelet's makeEnvironmentVariables does:
/// `envFrom` first (with its prefix; keys that are no valid variable names skipped), then `env`
/// (later wins), each `configMapKeyRef` / `secretKeyRef` replaced by its value (nothing for an
/// optional one that is missing). The warnings name the keys skipped
/// (InvalidEnvironmentVariableNames). Err: CreateContainerConfigError's message.
pub fn resolve_env(
    c: &Container,
    namespace: &str,
    objects: &PodObjects,
) -> Result<(Container, Vec<String>), String> {
    let mut env: Vec<EnvVar> = Vec::new();
    let mut warnings = Vec::new();
    let literal_var = |name: String, v: &str| EnvVar {
        name,
        value: Some(literal(v)),
        value_from: None,
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, optional, data): (&str, &str, bool, Option<BTreeMap<String, String>>) =
            if let Some(r) = &from.config_map_ref {
                let data = config_map(objects, &r.name).map(|cm| cm.data.clone());
                ("configMap", &r.name, r.optional == Some(true), data)
            } else if let Some(r) = &from.secret_ref {
                let data = secret(objects, &r.name).map(|d| {
                    d.iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect()
                });
                ("secret", &r.name, r.optional == Some(true), data)
            } else {
                continue;
            };
        let Some(data) = data else {
            if optional {
                continue;
            }
            return Err(not_found(&kind.to_lowercase(), name));
        };
        let mut invalid = Vec::new();
        for (k, v) in data {
            let k = format!("{prefix}{k}");
            if !names::is_env_var_name(&k).is_empty() {
                invalid.push(k);
                continue;
            }
            env.retain(|e| e.name != k);
            env.push(literal_var(k, &v));
        }
        if !invalid.is_empty() {
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }
    for e in c.env.iter().flatten() {
        let from = e.value_from.as_ref();
        let resolved = if let Some(r) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
            let optional = r.optional == Some(true);
            match config_map(objects, &r.name) {
                None if optional => continue,
                None => return Err(not_found("configmap", &r.name)),
                Some(cm) => match cm.data.get(&r.key) {
                    Some(v) => Some(literal(v)),
                    None if optional => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            r.key, r.name
                        ))
                    }
                },
            }
        } else if let Some(r) = from.and_then(|f| f.secret_key_ref.as_ref()) {
            let optional = r.optional == Some(true);
            match secret(objects, &r.name) {
                None if optional => continue,
                None => return Err(not_found("secret", &r.name)),
                Some(d) => match d.get(&r.key) {
                    Some(v) => Some(literal(&String::from_utf8_lossy(v))),
                    None if optional => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            r.key, r.name
                        ))
                    }
                },
            }
        } else {
            None
        };
        env.retain(|x| x.name != e.name);
        env.push(match resolved {
            Some(v) => EnvVar {
                name: e.name.clone(),
                value: Some(v),
                value_from: None,
            },
            None => e.clone(),
        });
    }
    let mut out = c.clone();
    out.env = (!env.is_empty()).then_some(env);
    out.env_from = None;
    Ok((out, warnings))
}

/// The link the AtomicWriter swaps: it names the directory of the current files.
pub const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// What a volume directory holds now: the timestamped directory `..data` names and its files,
/// and the user-visible links beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub data_dir: Option<String>,
    pub files: BTreeMap<String, (Vec<u8>, u32)>,
    pub links: BTreeSet<String>,
}

/// What [`write_atomic`] does to a volume directory (the AtomicWriter's steps, decided purely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePlan {
    /// The new timestamped directory and the files to write in it.
    pub data_dir: String,
    pub files: Vec<FileData>,
    /// Top-level names to link to `..data/NAME` (those not linked yet).
    pub link: Vec<String>,
    /// Links of names the new files no longer have.
    pub unlink: Vec<String>,
    /// The previous timestamped directory, removed last.
    pub remove: Option<String>,
}

/// The plan that makes `current` hold `files` (None: it does already), the new directory named
/// `stamp`.
pub fn plan(current: &Current, files: &[FileData], stamp: &str) -> Option<WritePlan> {
    let want: BTreeMap<String, (Vec<u8>, u32)> = files
        .iter()
        .map(|f| (f.path.clone(), (f.data.clone(), f.mode)))
        .collect();
    if current.data_dir.is_some() && current.files == want {
        return None;
    }
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.path.split('/').next().map(str::to_string))
        .collect();
    Some(WritePlan {
        data_dir: stamp.to_string(),
        files: files.to_vec(),
        link: tops.difference(&current.links).cloned().collect(),
        unlink: current.links.difference(&tops).cloned().collect(),
        remove: current.data_dir.clone(),
    })
}

/// What `dir` holds now (nothing when it does not exist).
fn read_current(dir: &Path) -> std::io::Result<Current> {
    use std::os::unix::fs::PermissionsExt;
    let mut cur = Current::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cur),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && e.file_type()?.is_symlink() {
            cur.links.insert(name);
        }
    }
    let Ok(target) = std::fs::read_link(dir.join(DATA_LINK)) else {
        return Ok(cur);
    };
    let data_dir = target.to_string_lossy().into_owned();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&data_dir).join(&rel))? {
            let e = e?;
            let path = if rel.is_empty() {
                e.file_name().to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", e.file_name().to_string_lossy())
            };
            if e.file_type()?.is_dir() {
                stack.push(path);
            } else {
                let mode = e.metadata()?.permissions().mode() & 0o7777;
                cur.files.insert(path, (std::fs::read(e.path())?, mode));
            }
        }
    }
    cur.data_dir = Some(data_dir);
    Ok(cur)
}

/// Makes `dir` hold exactly `files`, atomically as the kubelet's AtomicWriter does; with `gid`
/// (fsGroup) the files are group-owned by it and group-readable. False: nothing changed.
pub fn write_atomic(dir: &Path, files: &[FileData], gid: Option<u32>) -> std::io::Result<bool> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let current = read_current(dir)?;
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S%.9f"));
    let Some(plan) = plan(&current, files, &stamp) else {
        return Ok(false);
    };
    std::fs::create_dir_all(dir)?;
    let data_dir = dir.join(&plan.data_dir);
    std::fs::create_dir(&data_dir)?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755))?;
    let chown = |p: &Path| match gid {
        Some(g) => nix::unistd::chown(p, None, Some(nix::unistd::Gid::from_raw(g)))
            .map_err(std::io::Error::from),
        None => Ok(()),
    };
    chown(&data_dir)?;
    for f in &plan.files {
        let path = data_dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
            chown(parent)?;
        }
        std::fs::write(&path, &f.data)?;
        let mode = if gid.is_some() {
            f.mode | 0o440
        } else {
            f.mode
        };
        chown(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    let tmp = dir.join(DATA_LINK_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&plan.data_dir, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA_LINK))?;
    for name in &plan.link {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    for name in &plan.unlink {
        std::fs::remove_file(dir.join(name))?;
    }
    if let Some(old) = &plan.remove {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;
    use serde_json::{json, Value};

    use super::*;

    fn objects() -> PodObjects {
        let cm = ConfigMapData {
            data: BTreeMap::from([
                ("app.conf".into(), "level=info".into()),
                ("MODE".into(), "fast $(HOME)".into()),
                ("bad key".into(), "x".into()),
            ]),
            binary: BTreeMap::from([("blob".into(), vec![0, 1])]),
        };
        PodObjects {
            config_maps: BTreeMap::from([("cm".into(), Some(cm)), ("gone".into(), None)]),
            secrets: BTreeMap::from([
                (
                    "s".into(),
                    Some(BTreeMap::from([("password".into(), b"hunter2".to_vec())])),
                ),
                ("gone".into(), None),
            ]),
            tokens: BTreeMap::from([(String::new(), "jwt".into())]),
            ca_crt: b"PEM".to_vec(),
        }
    }

    type Files = Vec<(String, Vec<u8>, u32)>;
    type Env = Vec<(String, String)>;

    fn files(vol: Value) -> Result<Option<Files>, String> {
        let vol: Volume = serde_json::from_value(vol).unwrap();
        let spec = PodSpec::default();
        let empty = BTreeMap::new();
        let facts = PodFacts {
            name: "p",
            namespace: "d",
            uid: "u",
            labels: &empty,
            annotations: &empty,
            spec: &spec,
            host_ips: &[],
            pod_ips: &[],
            node: Default::default(),
        };
        volume_files(&vol, &objects(), &facts)
            .map(|o| o.map(|v| v.into_iter().map(|f| (f.path, f.data, f.mode)).collect()))
    }

    fn f(path: &str, data: &[u8], mode: u32) -> (String, Vec<u8>, u32) {
        (path.into(), data.to_vec(), mode)
    }

    #[test]
    fn volume_payloads_follow_make_payload() {
        // (volume, files or a part of the error)
        let cases: Vec<(Value, Result<Option<Vec<_>>, &str>)> = vec![
            (json!({"name": "v", "emptyDir": {}}), Ok(None)),
            (
                json!({"name": "v", "configMap": {"name": "cm"}}),
                Ok(Some(vec![
                    f("MODE", b"fast $(HOME)", 0o644),
                    f("app.conf", b"level=info", 0o644),
                    f("bad key", b"x", 0o644),
                    f("blob", &[0, 1], 0o644),
                ])),
            ),
            (
                json!({"name": "v", "configMap": {"name": "cm", "defaultMode": 0o400,
                    "items": [{"key": "app.conf", "path": "etc/app.conf"}, {"key": "blob", "path": "b", "mode": 0o600}]}}),
                Ok(Some(vec![
                    f("etc/app.conf", b"level=info", 0o400),
                    f("b", &[0, 1], 0o600),
                ])),
            ),
            (
                json!({"name": "v", "configMap": {"name": "cm", "items": [{"key": "nope", "path": "x"}]}}),
                Err("configmap references non-existent config key: nope"),
            ),
            (
                json!({"name": "v", "configMap": {"name": "cm", "optional": true, "items": [{"key": "nope", "path": "x"}]}}),
                Ok(Some(vec![])),
            ),
            (
                json!({"name": "v", "configMap": {"name": "gone"}}),
                Err("configmap \"gone\" not found"),
            ),
            (
                json!({"name": "v", "configMap": {"name": "gone", "optional": true}}),
                Ok(Some(vec![])),
            ),
            (
                json!({"name": "v", "secret": {"secretName": "s", "defaultMode": 0o440}}),
                Ok(Some(vec![f("password", b"hunter2", 0o440)])),
            ),
            (
                json!({"name": "v", "secret": {"secretName": "gone"}}),
                Err("secret \"gone\" not found"),
            ),
            (
                json!({"name": "v", "secret": {"secretName": "s", "items": [{"key": "password", "path": "../x"}]}}),
                Err("invalid file path"),
            ),
            (
                json!({"name": "v", "projected": {"defaultMode": 0o444, "sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "cm", "items": [{"key": "app.conf", "path": "conf"}]}},
                    {"secret": {"name": "gone", "optional": true}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}),
                Ok(Some(vec![
                    f("conf", b"level=info", 0o444),
                    f("ns", b"d", 0o444),
                    f("token", b"jwt", 0o444),
                ])),
            ),
            (
                json!({"name": "v", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "path": "t"}}]}}),
                Err("no service account token issued yet for audience \"vault\""),
            ),
        ];
        for (vol, want) in cases {
            let got = files(vol.clone()).map(|o| {
                o.map(|mut v| {
                    v.sort();
                    v
                })
            });
            match (&got, want) {
                (Ok(g), Ok(mut w)) => {
                    if let Some(w) = w.as_mut() {
                        w.sort();
                    }
                    assert_eq!(*g, w, "{vol}")
                }
                (Err(m), Err(part)) => assert!(m.contains(part), "{vol}: {m}"),
                _ => panic!("{vol}: {got:?}"),
            }
        }
    }

    #[test]
    fn env_follows_make_environment_variables() {
        let container = |c: Value| -> Container {
            let mut c = c;
            c["name"] = json!("c");
            serde_json::from_value(c).unwrap()
        };
        let env = |c: &Container| -> Vec<(String, String)> {
            c.env
                .iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        };
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        // (container, env or a part of the error, warnings)
        let cases: Vec<(Value, Result<Env, &str>, usize)> = vec![
            (
                json!({"envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                    "env": [{"name": "CM_MODE", "value": "override"},
                            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}}]}),
                Ok(pairs(&[
                    ("CM_app.conf", "level=info"),
                    ("CM_MODE", "override"),
                    ("PW", "hunter2"),
                ])),
                1,
            ),
            (
                json!({"env": [{"name": "M", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "MODE"}}}]}),
                Ok(pairs(&[("M", "fast $$(HOME)")])),
                0,
            ),
            (
                json!({"env": [{"name": "M", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]}),
                Err("configmap \"gone\" not found"),
                0,
            ),
            (
                json!({"env": [{"name": "M", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                               {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nokey", "optional": true}}}]}),
                Ok(vec![]),
                0,
            ),
            (
                json!({"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nokey"}}}]}),
                Err("couldn't find key nokey in Secret d/s"),
                0,
            ),
            (
                json!({"envFrom": [{"secretRef": {"name": "gone"}}]}),
                Err("secret \"gone\" not found"),
                0,
            ),
            (
                json!({"envFrom": [{"secretRef": {"name": "gone", "optional": true}}, {"secretRef": {"name": "s"}}]}),
                Ok(pairs(&[("password", "hunter2")])),
                0,
            ),
        ];
        for (c, want, nwarn) in cases {
            let got = resolve_env(&container(c.clone()), "d", &objects());
            match (&got, want) {
                (Ok((out, warnings)), Ok(w)) => {
                    assert_eq!(env(out), w, "{c}");
                    assert_eq!(warnings.len(), nwarn, "{c}: {warnings:?}");
                    assert!(out.env_from.is_none());
                }
                (Err(m), Err(part)) => assert!(m.contains(part), "{c}: {m}"),
                _ => panic!("{c}: {got:?}"),
            }
        }
        let (_, warnings) = resolve_env(
            &container(json!({"envFrom": [{"configMapRef": {"name": "cm"}}]})),
            "d",
            &objects(),
        )
        .unwrap();
        assert_eq!(warnings, vec!["Keys [bad key] from the EnvFrom configMap d/cm were skipped since they are considered invalid environment variable names."]);
    }

    #[test]
    fn pull_credentials_of_image_pull_secrets() {
        let cfg = |u: &str| {
            format!(r#"{{"auths": {{"r:5000": {{"username": "{u}", "password": "p"}}}}}}"#)
                .into_bytes()
        };
        let objects = PodObjects {
            secrets: BTreeMap::from([
                (
                    "a".into(),
                    Some(BTreeMap::from([(".dockerconfigjson".into(), cfg("a"))])),
                ),
                (
                    "b".into(),
                    Some(BTreeMap::from([(".dockerconfigjson".into(), cfg("b"))])),
                ),
                (
                    "bad".into(),
                    Some(BTreeMap::from([(
                        ".dockerconfigjson".into(),
                        b"{".to_vec(),
                    )])),
                ),
            ]),
            ..PodObjects::default()
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (c, problems) = pull_credentials(&names(&["a", "b"]), &objects);
        assert_eq!(
            c.auth("r:5000"),
            oci_client::secrets::RegistryAuth::Basic("a".into(), "p".into())
        );
        assert!(problems.is_empty());
        let (c, problems) = pull_credentials(&names(&["gone", "bad", "b"]), &objects);
        assert_eq!(
            c.auth("r:5000"),
            oci_client::secrets::RegistryAuth::Basic("b".into(), "p".into())
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    fn file(path: &str, data: &str) -> FileData {
        FileData {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn atomic_writer_plans() {
        let empty = Current::default();
        let written = Current {
            data_dir: Some("..1".into()),
            files: BTreeMap::from([
                ("a".into(), (b"1".to_vec(), 0o644)),
                ("d/b".into(), (b"2".to_vec(), 0o644)),
            ]),
            links: BTreeSet::from(["a".into(), "d".into()]),
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (current, files, link, unlink, remove) or None: unchanged
        let cases = [
            (
                &empty,
                vec![file("a", "1")],
                Some((names(&["a"]), names(&[]), None)),
            ),
            (&empty, vec![], Some((names(&[]), names(&[]), None))),
            (&written, vec![file("a", "1"), file("d/b", "2")], None),
            (
                &written,
                vec![file("a", "1"), file("d/b", "3")],
                Some((names(&[]), names(&[]), Some("..1"))),
            ),
            (
                &written,
                vec![file("c", "1")],
                Some((names(&["c"]), names(&["a", "d"]), Some("..1"))),
            ),
        ];
        for (cur, files, want) in cases {
            let got = plan(cur, &files, "..2").map(|p| (p.link, p.unlink, p.remove));
            let want = want.map(|(l, u, r)| (l, u, r.map(str::to_string)));
            assert_eq!(got, want, "{cur:?} {files:?}");
        }
    }

    #[test]
    fn write_atomic_swaps_the_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        assert!(write_atomic(&vol, &[file("a", "1"), file("d/b", "2")], None).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(vol.join("d/b")).unwrap(), "2");
        let first = std::fs::read_link(vol.join(DATA_LINK)).unwrap();
        assert!(!write_atomic(&vol, &[file("a", "1"), file("d/b", "2")], None).unwrap());
        assert!(write_atomic(&vol, &[file("a", "9")], None).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "9");
        assert!(
            std::fs::symlink_metadata(vol.join("d")).is_err(),
            "d unlinked"
        );
        assert!(!vol.join(&first).exists(), "the old data directory is gone");
        let left: Vec<String> = std::fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
    }
}
