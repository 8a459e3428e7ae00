use super::*;
use crate::core::patch::merge_patch;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use serde_json::{json, Value};

#[test]
fn server_policy_refuses_privileged_and_host_path_when_told() {
    let spec: PodSpec = serde_json::from_value(serde_json::json!({
        "initContainers": [{"name": "i", "image": "x", "securityContext": {"privileged": true}}],
        "containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "securityContext": {"privileged": true}},
            {"name": "c", "image": "x", "securityContext": {"privileged": false}}],
        "volumes": [{"name": "e", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/"}}],
    }))
    .unwrap();
    let p = "spec.template.spec";
    let fields = |policy| -> Vec<(String, ErrorType, String)> {
        validate_policy(Some(&spec), p, policy)
            .into_iter()
            .map(|e| (e.field, e.kind, e.message))
            .collect()
    };
    let forbidden = |f: &str| {
        (
            format!("{p}.{f}"),
            ErrorType::Forbidden,
            "Forbidden: disallowed by cluster policy".to_string(),
        )
    };
    for (policy, want) in [
        (Policy::default(), vec![]),
        (
            Policy {
                allow_privileged: false,
                allow_host_path: true,
                ..Policy::default()
            },
            vec![
                forbidden("initContainers[0].securityContext.privileged"),
                forbidden("containers[1].securityContext.privileged"),
            ],
        ),
        (
            Policy {
                allow_privileged: true,
                allow_host_path: false,
                ..Policy::default()
            },
            vec![forbidden("volumes[1].hostPath")],
        ),
    ] {
        assert_eq!(fields(policy), want, "{policy:?}");
    }
    assert!(validate_policy(
        None,
        p,
        Policy {
            allow_privileged: false,
            allow_host_path: false,
            ..Policy::default()
        }
    )
    .is_empty());
}

/// (case name, change to the object, expected (field, error type) list)
type Case = (&'static str, Value, Vec<(&'static str, ErrorType)>);

fn ds_from_yaml(yaml: &str) -> DaemonSet {
    serde_yaml::from_str(yaml).expect("test yaml is a daemonset")
}

/// The three DaemonSets of /work/shared/reference/daemonsets-guide.md.
const GUIDE: [&str; 3] = [
    r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-monitor
  labels:
    app: monitoring
spec:
  selector:
    matchLabels:
      app: monitoring
  template:
    metadata:
      labels:
        app: monitoring
    spec:
      containers:
      - name: node-monitor-agent
        image: monitoring-agent:latest
        resources:
          limits:
            memory: "200Mi"
            cpu: "100m"
      nodeSelector:
        node-role.kubernetes.io/worker: "true"
"#,
    r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-proxy
spec:
  selector:
    matchLabels:
      k8s-app: kube-proxy
  template:
    metadata:
      labels:
        k8s-app: kube-proxy
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - key: node-role.kubernetes.io/worker
                operator: In
                values:
                - "true"
      containers:
      - name: kube-proxy
        image: kube-proxy:latest
"#,
    r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: example-daemonset
spec:
  selector:
    matchLabels:
      app: example
  template:
    metadata:
      labels:
        app: example
    spec:
      containers:
      - name: example-container
        image: nginx
"#,
];

#[test]
fn guide_daemonsets_are_valid_before_and_after_defaulting() {
    for yaml in GUIDE {
        let mut ds = ds_from_yaml(yaml);
        assert_eq!(validate_daemonset(&ds), vec![], "{yaml}");
        default_daemonset(&mut ds);
        assert_eq!(validate_daemonset(&ds), vec![], "{yaml}");
    }
}

/// A minimal valid DaemonSet; each case below changes it with a JSON merge patch.
fn base() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "ds", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {
                "metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
            }
        }
    })
}

fn with_containers(containers: Value) -> Value {
    json!({"spec": {"template": {"spec": {"containers": containers}}}})
}

fn with_pod(pod: Value) -> Value {
    json!({"spec": {"template": {"spec": pod}}})
}

fn check_daemonset_cases(cases: Vec<Case>) {
    for (name, patch, want) in cases {
        let doc = merge_patch(&base(), &patch).expect("merge patch");
        let ds: DaemonSet = serde_json::from_value(doc).expect("patched daemonset decodes");
        let got: Vec<(String, ErrorType)> = validate_daemonset(&ds)
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect();
        let want: Vec<(String, ErrorType)> =
            want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn invalid_daemonsets_name_the_field() {
    use ErrorType::*;
    let affinity = |expr: Value| {
        with_pod(json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}}))
    };
    let strategy = |ru: Value| json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": ru}}});
    let vol = |v: Value| with_pod(json!({"volumes": v}));
    let c = |extra: Value| {
        let mut c = json!({"name": "c", "image": "busybox:1.36"});
        json_patch::merge(&mut c, &extra);
        with_containers(json!([c]))
    };
    let cases: Vec<Case> = vec![
            ("the base is valid", json!({}), vec![]),
            ("name missing", json!({"metadata": {"name": null}}), vec![("metadata.name", Required)]),
            ("generateName instead of name", json!({"metadata": {"name": null, "generateName": "ds-"}}), vec![]),
            ("name not a DNS subdomain", json!({"metadata": {"name": "Bad_Name"}}), vec![("metadata.name", Invalid)]),
            ("name too long", json!({"metadata": {"name": "a".repeat(254)}}), vec![("metadata.name", Invalid)]),
            ("namespace not a DNS label", json!({"metadata": {"namespace": "a.b"}}), vec![("metadata.namespace", Invalid)]),
            ("label key with two slashes", json!({"metadata": {"labels": {"a/b/c": "x"}}}), vec![("metadata.labels", Invalid)]),
            ("label key prefix not a subdomain", json!({"metadata": {"labels": {"Ex.com/a": "x"}}}), vec![("metadata.labels", Invalid)]),
            ("label value too long", json!({"metadata": {"labels": {"k": "v".repeat(64)}}}), vec![("metadata.labels", Invalid)]),
            ("label value bad charset", json!({"metadata": {"labels": {"k": "-v"}}}), vec![("metadata.labels", Invalid)]),
            ("annotation key invalid", json!({"metadata": {"annotations": {"_x": "1"}}}), vec![("metadata.annotations", Invalid)]),
            ("annotations over 256 KiB", json!({"metadata": {"annotations": {"big": "x".repeat(262_142)}}}), vec![("metadata.annotations", TooLong)]),
            ("empty selector", json!({"spec": {"selector": {"matchLabels": null}}}), vec![("spec.selector", Invalid)]),
            ("selector does not match template", json!({"spec": {"template": {"metadata": {"labels": {"app": "b"}}}}}),
                vec![("spec.template.metadata.labels", Invalid)]),
            ("In needs values", json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}}),
                vec![("spec.selector.matchExpressions[0].values", Required)]),
            ("Exists takes no values", json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}}}),
                vec![("spec.selector.matchExpressions[0].values", Forbidden)]),
            ("unknown selector operator", json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Has"}]}}}),
                vec![("spec.selector.matchExpressions[0].operator", Invalid)]),
            ("no containers", with_containers(json!([])), vec![("spec.template.spec.containers", Required)]),
            ("container name not a DNS label", c(json!({"name": "C_1"})), vec![("spec.template.spec.containers[0].name", Invalid)]),
            ("duplicate container names", with_containers(json!([{"name": "c", "image": "i"}, {"name": "c", "image": "i"}])),
                vec![("spec.template.spec.containers[1].name", Duplicate)]),
            ("image missing", c(json!({"image": null})), vec![("spec.template.spec.containers[0].image", Required)]),
            ("restartPolicy Never", with_pod(json!({"restartPolicy": "Never"})), vec![("spec.template.spec.restartPolicy", NotSupported)]),
            ("restartPolicy unknown", with_pod(json!({"restartPolicy": "Sometimes"})),
                vec![("spec.template.spec.restartPolicy", NotSupported), ("spec.template.spec.restartPolicy", NotSupported)]),
            ("dnsPolicy unknown", with_pod(json!({"dnsPolicy": "Google"})), vec![("spec.template.spec.dnsPolicy", NotSupported)]),
            ("port 0", c(json!({"ports": [{"containerPort": 0}]})), vec![("spec.template.spec.containers[0].ports[0].containerPort", Required)]),
            ("port 70000", c(json!({"ports": [{"containerPort": 70000}]})), vec![("spec.template.spec.containers[0].ports[0].containerPort", Invalid)]),
            ("hostPort 70000", c(json!({"ports": [{"containerPort": 80, "hostPort": 70000}]})), vec![("spec.template.spec.containers[0].ports[0].hostPort", Invalid)]),
            ("protocol unknown", c(json!({"ports": [{"containerPort": 80, "protocol": "ICMP"}]})), vec![("spec.template.spec.containers[0].ports[0].protocol", NotSupported)]),
            ("imagePullPolicy unknown", c(json!({"imagePullPolicy": "Sometimes"})), vec![("spec.template.spec.containers[0].imagePullPolicy", NotSupported)]),
            ("duplicate volume names", vol(json!([{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}])),
                vec![("spec.template.spec.volumes[1].name", Duplicate)]),
            ("volume name not a DNS label", vol(json!([{"name": "V", "emptyDir": {}}])), vec![("spec.template.spec.volumes[0].name", Invalid)]),
            ("hostPath relative", vol(json!([{"name": "v", "hostPath": {"path": "var/log"}}])), vec![("spec.template.spec.volumes[0].hostPath.path", Invalid)]),
            ("hostPath type unknown", vol(json!([{"name": "v", "hostPath": {"path": "/x", "type": "Pipe"}}])),
                vec![("spec.template.spec.volumes[0].hostPath.type", NotSupported)]),
            ("mount of a missing volume", c(json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]})),
                vec![("spec.template.spec.containers[0].volumeMounts[0].name", Invalid)]),
            ("mount of an existing volume", merge_patch(&c(json!({"volumeMounts": [{"name": "logs", "mountPath": "/x"}]})),
                &vol(json!([{"name": "logs", "hostPath": {"path": "/var/log"}}]))).expect("merge"), vec![]),
            ("updateStrategy type unknown", json!({"spec": {"updateStrategy": {"type": "Recreate"}}}), vec![("spec.updateStrategy", NotSupported)]),
            ("RollingUpdate without rollingUpdate", json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}}}),
                vec![("spec.updateStrategy.rollingUpdate", Required)]),
            ("OnDelete", json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}), vec![]),
            ("maxUnavailable percent", strategy(json!({"maxUnavailable": "20%"})), vec![]),
            ("maxSurge only", strategy(json!({"maxUnavailable": 0, "maxSurge": 1})), vec![]),
            ("maxUnavailable over 100%", strategy(json!({"maxUnavailable": "150%"})), vec![("spec.updateStrategy.rollingUpdate.maxUnavailable", Invalid)]),
            ("maxUnavailable not a percent", strategy(json!({"maxUnavailable": "ten", "maxSurge": 1})), vec![("spec.updateStrategy.rollingUpdate.maxUnavailable", Invalid)]),
            ("maxUnavailable negative", strategy(json!({"maxUnavailable": -1})), vec![("spec.updateStrategy.rollingUpdate.maxUnavailable", Invalid)]),
            ("both zero", strategy(json!({"maxUnavailable": 0, "maxSurge": "0%"})), vec![("spec.updateStrategy.rollingUpdate.maxUnavailable", Required)]),
            ("both non-zero", strategy(json!({"maxUnavailable": 1, "maxSurge": 1})), vec![("spec.updateStrategy.rollingUpdate.maxSurge", Invalid)]),
            ("minReadySeconds negative", json!({"spec": {"minReadySeconds": -1}}), vec![("spec.minReadySeconds", Invalid)]),
            ("revisionHistoryLimit negative", json!({"spec": {"revisionHistoryLimit": -1}}), vec![("spec.revisionHistoryLimit", Invalid)]),
            ("terminationGracePeriodSeconds negative", with_pod(json!({"terminationGracePeriodSeconds": -1})),
                vec![("spec.template.spec.terminationGracePeriodSeconds", Invalid)]),
            ("toleration operator unknown", with_pod(json!({"tolerations": [{"key": "k", "operator": "Like"}]})),
                vec![("spec.template.spec.tolerations[0].operator", NotSupported)]),
            ("toleration Exists with a value", with_pod(json!({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]})),
                vec![("spec.template.spec.tolerations[0].operator", Invalid)]),
            ("toleration effect unknown", with_pod(json!({"tolerations": [{"operator": "Exists", "effect": "NoRun"}]})),
                vec![("spec.template.spec.tolerations[0].effect", NotSupported)]),
            ("toleration of everything", with_pod(json!({"tolerations": [{"operator": "Exists"}]})), vec![]),
            ("toleration without key needs Exists", with_pod(json!({"tolerations": [{"value": "v"}]})),
                vec![("spec.template.spec.tolerations[0].operator", Invalid)]),
            ("nodeSelector key invalid", with_pod(json!({"nodeSelector": {"a/b/c": "x"}})), vec![("spec.template.spec.nodeSelector", Invalid)]),
            ("affinity operator unknown", affinity(json!({"key": "k", "operator": "Near", "values": ["a"]})), vec![("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator", Invalid)]),
            ("affinity Gt with two values", affinity(json!({"key": "k", "operator": "Gt", "values": ["1", "2"]})), vec![("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values", Required)]),
            ("affinity Lt with a non-integer", affinity(json!({"key": "k", "operator": "Lt", "values": ["x"]})), vec![("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]", Invalid)]),
            ("affinity Gt with one integer", affinity(json!({"key": "k", "operator": "Gt", "values": ["3"]})), vec![]),
            ("affinity In without values", affinity(json!({"key": "k", "operator": "In"})), vec![("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values", Required)]),
        ];
    check_daemonset_cases(cases);
}

#[test]
fn init_containers_and_lifecycle_are_validated_as_kube_apiserver_does() {
    use ErrorType::*;
    let app = json!({"name": "c", "image": "i"});
    let init = |i: Value| with_pod(json!({"initContainers": [i], "containers": [app]}));
    let hook = |l: Value| with_containers(json!([{"name": "c", "image": "i", "lifecycle": l}]));
    #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("an init container", init(json!({"name": "i", "image": "i"})), vec![]),
            ("a sidecar with probes and hooks", init(json!({"name": "i", "image": "i", "restartPolicy": "Always",
                "startupProbe": {"exec": {"command": ["true"]}}, "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}})), vec![]),
            ("init restartPolicy other than Always", init(json!({"name": "i", "image": "i", "restartPolicy": "OnFailure"})),
                vec![("spec.template.spec.initContainers[0].restartPolicy", NotSupported)]),
            ("lifecycle on a regular init container", init(json!({"name": "i", "image": "i", "lifecycle": {"postStart": {"exec": {"command": ["x"]}}}})),
                vec![("spec.template.spec.initContainers[0].lifecycle", Forbidden)]),
            ("init name taken by an app container", init(json!({"name": "c", "image": "i"})),
                vec![("spec.template.spec.containers[0].name", Duplicate)]),
            ("init image missing", init(json!({"name": "i"})), vec![("spec.template.spec.initContainers[0].image", Required)]),
            ("restartPolicy on an app container", with_containers(json!([{"name": "c", "image": "i", "restartPolicy": "Always"}])),
                vec![("spec.template.spec.containers[0].restartPolicy", Forbidden)]),
            ("hooks", hook(json!({"postStart": {"httpGet": {"port": 80}}, "preStop": {"exec": {"command": ["x"]}}})), vec![]),
            ("hook without handler", hook(json!({"preStop": {}})), vec![("spec.template.spec.containers[0].lifecycle.preStop", Required)]),
            ("hook exec without command", hook(json!({"postStart": {"exec": {}}})),
                vec![("spec.template.spec.containers[0].lifecycle.postStart.exec.command", Required)]),
            ("hook with two handlers", hook(json!({"preStop": {"exec": {"command": ["x"]}, "sleep": {"seconds": 1}}})),
                vec![("spec.template.spec.containers[0].lifecycle.preStop.sleep", Forbidden)]),
            ("negative sleep", hook(json!({"preStop": {"sleep": {"seconds": -1}}})),
                vec![("spec.template.spec.containers[0].lifecycle.preStop.sleep.seconds", Invalid)]),
            ("hook port out of range", hook(json!({"postStart": {"httpGet": {"port": 70000}}})),
                vec![("spec.template.spec.containers[0].lifecycle.postStart.httpGet.port", Invalid)]),
        ];
    check_daemonset_cases(cases);
}

#[test]
fn probes_are_validated_as_kube_apiserver_does() {
    use ErrorType::*;
    let probe = |kind: &str, p: Value| {
        with_containers(json!([{"name": "c", "image": "busybox:1.36", kind: p}]))
    };
    let c = "spec.template.spec.containers[0]";
    type ProbeCase = (&'static str, Value, Vec<(String, ErrorType)>);
    let cases: Vec<ProbeCase> = vec![
        (
            "exec readiness",
            probe(
                "readinessProbe",
                json!({"exec": {"command": ["true"]}, "periodSeconds": 1}),
            ),
            vec![],
        ),
        (
            "httpGet by port name",
            probe(
                "livenessProbe",
                json!({"httpGet": {"port": "http", "path": "/healthz"}}),
            ),
            vec![],
        ),
        (
            "tcpSocket startup",
            probe(
                "startupProbe",
                json!({"tcpSocket": {"port": 80}, "failureThreshold": 30}),
            ),
            vec![],
        ),
        (
            "no handler",
            probe("readinessProbe", json!({"periodSeconds": 1})),
            vec![(format!("{c}.readinessProbe"), Required)],
        ),
        (
            "two handlers",
            probe(
                "readinessProbe",
                json!({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}),
            ),
            vec![(format!("{c}.readinessProbe.tcpSocket"), Forbidden)],
        ),
        (
            "exec without command",
            probe("livenessProbe", json!({"exec": {}})),
            vec![(format!("{c}.livenessProbe.exec.command"), Required)],
        ),
        (
            "port out of range",
            probe("livenessProbe", json!({"httpGet": {"port": 70000}})),
            vec![(format!("{c}.livenessProbe.httpGet.port"), Invalid)],
        ),
        (
            "port name invalid",
            probe(
                "livenessProbe",
                json!({"tcpSocket": {"port": "Not_A_Name"}}),
            ),
            vec![(format!("{c}.livenessProbe.tcpSocket.port"), Invalid)],
        ),
        (
            "scheme unknown",
            probe(
                "readinessProbe",
                json!({"httpGet": {"port": 80, "scheme": "FTP"}}),
            ),
            vec![(format!("{c}.readinessProbe.httpGet.scheme"), NotSupported)],
        ),
        (
            "header name invalid",
            probe(
                "readinessProbe",
                json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "a b", "value": "x"}]}}),
            ),
            vec![(format!("{c}.readinessProbe.httpGet.httpHeaders"), Invalid)],
        ),
        (
            "negative period",
            probe(
                "readinessProbe",
                json!({"exec": {"command": ["true"]}, "periodSeconds": -1}),
            ),
            vec![(format!("{c}.readinessProbe.periodSeconds"), Invalid)],
        ),
        (
            "liveness successThreshold 2",
            probe(
                "livenessProbe",
                json!({"exec": {"command": ["true"]}, "successThreshold": 2}),
            ),
            vec![(format!("{c}.livenessProbe.successThreshold"), Invalid)],
        ),
        (
            "startup successThreshold 3",
            probe(
                "startupProbe",
                json!({"exec": {"command": ["true"]}, "successThreshold": 3}),
            ),
            vec![(format!("{c}.startupProbe.successThreshold"), Invalid)],
        ),
        (
            "readiness successThreshold 3",
            probe(
                "readinessProbe",
                json!({"exec": {"command": ["true"]}, "successThreshold": 3}),
            ),
            vec![],
        ),
        (
            "readiness grace",
            probe(
                "readinessProbe",
                json!({"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}),
            ),
            vec![(
                format!("{c}.readinessProbe.terminationGracePeriodSeconds"),
                Invalid,
            )],
        ),
        (
            "probe on an init container",
            json!({"spec": {"template": {"spec": {"initContainers": [{"name": "init",
                    "image": "busybox:1.36", "readinessProbe": {"exec": {"command": ["true"]}}}]}}}}),
            vec![(
                "spec.template.spec.initContainers[0].readinessProbe".to_string(),
                Forbidden,
            )],
        ),
        (
            "liveness grace 0",
            probe(
                "livenessProbe",
                json!({"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 0}),
            ),
            vec![(
                format!("{c}.livenessProbe.terminationGracePeriodSeconds"),
                Invalid,
            )],
        ),
    ];
    for (name, patch, want) in cases {
        let doc = merge_patch(&base(), &patch).expect("merge patch");
        let mut ds: DaemonSet = serde_json::from_value(doc).expect("decodes");
        default_daemonset(&mut ds);
        let got: Vec<(String, ErrorType)> = validate_daemonset(&ds)
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect();
        assert_eq!(got, want, "{name}");
    }
    // the defaults kube-apiserver fills, explicit zeroes included
    let doc = merge_patch(
        &base(),
        &probe(
            "livenessProbe",
            json!({"httpGet": {"port": 80}, "periodSeconds": 0}),
        ),
    )
    .unwrap();
    let mut ds: DaemonSet = serde_json::from_value(doc).unwrap();
    default_daemonset(&mut ds);
    let p = ds.spec.unwrap().template.spec.unwrap().containers[0]
        .liveness_probe
        .clone()
        .unwrap();
    assert_eq!(
        (
            p.period_seconds,
            p.timeout_seconds,
            p.success_threshold,
            p.failure_threshold
        ),
        (Some(10), Some(1), Some(1), Some(3))
    );
    let h = p.http_get.unwrap();
    assert_eq!(
        (h.path.as_deref(), h.scheme.as_deref()),
        (Some("/"), Some("HTTP"))
    );
}

#[test]
fn resource_quantities_are_checked() {
    use ErrorType::*;
    let res = |resources: Value| {
        with_containers(json!([{"name": "c", "image": "i", "resources": resources}]))
    };
    let cases: Vec<Case> = vec![
        (
            "requests below limits",
            res(
                json!({"requests": {"cpu": "50m", "memory": "100Mi"}, "limits": {"cpu": "0.1", "memory": "200Mi"}}),
            ),
            vec![],
        ),
        (
            "limit that does not parse",
            res(json!({"limits": {"cpu": "lots"}})),
            vec![(
                "spec.template.spec.containers[0].resources.limits[cpu]",
                Invalid,
            )],
        ),
        (
            "request above limit",
            res(json!({"requests": {"memory": "1Gi"}, "limits": {"memory": "200Mi"}})),
            vec![(
                "spec.template.spec.containers[0].resources.requests",
                Invalid,
            )],
        ),
        (
            "negative request",
            res(json!({"requests": {"cpu": "-1"}})),
            vec![(
                "spec.template.spec.containers[0].resources.requests[cpu]",
                Invalid,
            )],
        ),
    ];
    check_daemonset_cases(cases);
}

#[test]
fn kubernetes_messages() {
    let ds = |patch: Value| -> DaemonSet {
        serde_json::from_value(merge_patch(&base(), &patch).expect("merge")).expect("decodes")
    };
    let cases = vec![
            (
                validate_daemonset(&ds(with_pod(json!({"restartPolicy": "Never"})))),
                r#"spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always""#,
            ),
            (
                validate_daemonset(&ds(with_containers(json!([])))),
                "spec.template.spec.containers: Required value",
            ),
            (
                validate_daemonset(&ds(json!({"spec": {"template": {"metadata": {"labels": {"app": "b"}}}}}))),
                r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"b"}: `selector` does not match template `labels`"#,
            ),
            (
                validate_daemonset(&ds(json!({"spec": {"selector": {"matchLabels": null}}}))),
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for daemonset",
            ),
            (
                validate_daemonset_update(
                    &ds(json!({"spec": {"selector": {"matchLabels": {"app": "a", "x": "y"}},
                        "template": {"metadata": {"labels": {"x": "y"}}}}})),
                    &ds(json!({})),
                ),
                r#"spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"a", "x":"y"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"#,
            ),
        ];
    for (errs, want) in cases {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(lines, vec![want.to_string()]);
    }
}

#[test]
fn update_keeps_the_selector() {
    let old: DaemonSet = serde_json::from_value(base()).expect("decodes");
    let mut same = old.clone();
    if let Some(spec) = same.spec.as_mut() {
        spec.min_ready_seconds = Some(5);
    }
    assert_eq!(validate_daemonset_update(&same, &old), vec![]);
    let invalid_new: DaemonSet =
        serde_json::from_value(merge_patch(&base(), &with_containers(json!([]))).expect("merge"))
            .expect("decodes");
    let fields: Vec<String> = validate_daemonset_update(&invalid_new, &old)
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, vec!["spec.template.spec.containers"]);
}

#[test]
fn nodes() {
    use ErrorType::*;
    let cases: Vec<Case> = vec![
        (
            "plain node",
            json!({"metadata": {"name": "node-1.example", "labels": {"kubernetes.io/hostname": "node-1"}}}),
            vec![],
        ),
        (
            "name missing",
            json!({"metadata": {}}),
            vec![("metadata.name", Required)],
        ),
        (
            "name invalid",
            json!({"metadata": {"name": "Node_1"}}),
            vec![("metadata.name", Invalid)],
        ),
        (
            "namespace on a cluster-scoped kind",
            json!({"metadata": {"name": "n", "namespace": "default"}}),
            vec![("metadata.namespace", Forbidden)],
        ),
        (
            "label invalid",
            json!({"metadata": {"name": "n", "labels": {"k": "a b"}}}),
            vec![("metadata.labels", Invalid)],
        ),
        (
            "taint ok",
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            vec![],
        ),
        (
            "taint effect unknown",
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "NoRun"}]}}),
            vec![("spec.taints[0].effect", NotSupported)],
        ),
        (
            "taint effect empty",
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": ""}]}}),
            vec![("spec.taints[0].effect", Required)],
        ),
        (
            "taint key invalid",
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k k", "effect": "NoExecute"}]}}),
            vec![("spec.taints[0].key", Invalid)],
        ),
        (
            "duplicate taint",
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "NoExecute"}, {"key": "k", "effect": "NoExecute"}]}}),
            vec![("spec.taints[1]", Duplicate)],
        ),
    ];
    for (name, doc, want) in cases {
        let node: Node = serde_json::from_value(doc).expect("node decodes");
        let got: Vec<(String, ErrorType)> = validate_node(&node)
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect();
        let want: Vec<(String, ErrorType)> =
            want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn pods() {
    use ErrorType::*;
    let pod =
        |spec: Value| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
    let cases: Vec<Case> = vec![
        (
            "plain pod",
            pod(json!({"containers": [{"name": "c", "image": "i"}]})),
            vec![],
        ),
        (
            "restartPolicy Never is fine for a pod",
            pod(json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]})),
            vec![],
        ),
        (
            "restartPolicy OnFailure is fine for a pod",
            pod(json!({"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "i"}]})),
            vec![],
        ),
        (
            "restartPolicy unknown",
            pod(json!({"restartPolicy": "Later", "containers": [{"name": "c", "image": "i"}]})),
            vec![("spec.restartPolicy", NotSupported)],
        ),
        (
            "no containers",
            pod(json!({"containers": []})),
            vec![("spec.containers", Required)],
        ),
        (
            "no spec",
            json!({"metadata": {"name": "p"}}),
            vec![("spec.containers", Required)],
        ),
        (
            "init and app container share a name",
            pod(
                json!({"initContainers": [{"name": "c", "image": "i"}], "containers": [{"name": "c", "image": "i"}]}),
            ),
            vec![("spec.containers[0].name", Duplicate)],
        ),
        (
            "image missing",
            pod(json!({"containers": [{"name": "c"}]})),
            vec![("spec.containers[0].image", Required)],
        ),
    ];
    for (name, doc, want) in cases {
        let p: Pod = serde_json::from_value(doc).expect("pod decodes");
        let got: Vec<(String, ErrorType)> = validate_pod(&p)
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect();
        let want: Vec<(String, ErrorType)> =
            want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn defaults_fill_what_the_api_server_fills() {
    let mut ds = ds_from_yaml(GUIDE[0]);
    if let Some(spec) = ds.spec.as_mut() {
        if let Some(pod) = spec.template.spec.as_mut() {
            pod.containers[0].ports = serde_json::from_value(json!([{"containerPort": 80}])).ok();
        }
    }
    default_daemonset(&mut ds);
    let got = serde_json::to_value(&ds).expect("serializes");
    let want = json!({
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        "revisionHistoryLimit": 10,
    });
    assert_eq!(got["spec"]["updateStrategy"], want["updateStrategy"]);
    assert_eq!(
        got["spec"]["revisionHistoryLimit"],
        want["revisionHistoryLimit"]
    );
    let pod = &got["spec"]["template"]["spec"];
    let expected_pod = [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
    ];
    for (k, v) in expected_pod {
        assert_eq!(pod[k], v, "{k}");
    }
    let c = &pod["containers"][0];
    let expected_container = [
        ("terminationMessagePath", json!("/dev/termination-log")),
        ("terminationMessagePolicy", json!("File")),
        ("imagePullPolicy", json!("Always")),
    ];
    for (k, v) in expected_container {
        assert_eq!(c[k], v, "{k}");
    }
    assert_eq!(c["ports"][0]["protocol"], json!("TCP"));

    let mut again = ds.clone();
    default_daemonset(&mut again);
    assert_eq!(again, ds, "defaulting is idempotent");
}

#[test]
fn defaults_complete_a_partial_strategy_and_keep_given_values() {
    let cases = vec![
        (
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}}),
        ),
        (
            json!({"rollingUpdate": {"maxSurge": 1}}),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}),
        ),
        (json!({"type": "OnDelete"}), json!({"type": "OnDelete"})),
    ];
    for (given, want) in cases {
        let patch = json!({"spec": {"updateStrategy": given, "revisionHistoryLimit": 3,
                "template": {"spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 5}}}});
        let mut ds: DaemonSet =
            serde_json::from_value(merge_patch(&base(), &patch).expect("merge")).expect("decodes");
        default_daemonset(&mut ds);
        let got = serde_json::to_value(&ds).expect("serializes");
        assert_eq!(got["spec"]["updateStrategy"], want, "{given}");
        assert_eq!(got["spec"]["revisionHistoryLimit"], json!(3));
        assert_eq!(
            got["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            json!(5)
        );
    }
}

#[test]
fn pull_policy_follows_the_tag() {
    let cases = [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("localhost:5000/busybox", "Always"),
        ("localhost:5000/busybox:1.36", "IfNotPresent"),
        ("busybox@sha256:abcd", "IfNotPresent"),
        ("busybox:latest@sha256:abcd", "IfNotPresent"),
    ];
    for (image, want) in cases {
        assert_eq!(default_pull_policy(image), want, "{image}");
    }
}
