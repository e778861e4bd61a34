//! The Helm chart: lint, schema, strict manifest validation for Kubernetes
//! 1.29-1.34, and the rendered ConfigMap accepted by podmaster itself as
//! kubelet projects it. Needs `helm` and `kubernetes-validate` in .tools/bin
//! (scripts/test-deps.sh installs both); without them those tests are
//! reported ignored.

mod common;

use std::process::Command;

use common::*;

fn template(values: &[&str]) -> Result<String, String> {
    let mut c = Command::new(tool("helm"));
    c.args(["template", "t", &format!("{ROOT}/charts/podmaster")]);
    for v in values {
        c.args(["--set", v]);
    }
    let out = c.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const COMBOS: &[&[&str]] = &[
    &[],
    &[
        "reloadOnConfigChange=true",
        "serviceAccount.create=true",
        "podDisruptionBudget.enabled=true",
        "autoscaling.enabled=true",
        "resources.limits.cpu=1500m",
    ],
    &["kind=StatefulSet", "serviceMonitor.enabled=true"],
    &[
        "config.ini=[uwsgi]\nsocket = 0.0.0.0:8080\nprobe-socket = 0.0.0.0:9191\nprocesses = 3\npython-worker-override = /app/hello.py\n",
    ],
];

/// `kubernetes-validate --strict -k VERSION FILE`: Ok, or its complaint.
fn kubernetes_validate(version: &str, file: &std::path::Path) -> Result<(), String> {
    let out = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .expect("run .tools/bin/kubernetes-validate");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
#[cfg_attr(
    not(all(have_helm, have_kubernetes_validate)),
    ignore = "needs helm and kubernetes-validate in .tools/bin: run bash scripts/test-deps.sh"
)]
fn chart_lints_and_renders_valid_manifests_for_1_29_to_1_34() {
    let lint =
        Command::new(tool("helm")).args(["lint", "--strict", &format!("{ROOT}/charts/podmaster")]).output().unwrap();
    assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stdout));
    let d = TempDir::new("chart");
    let mut all = String::new();
    for combo in COMBOS {
        let out = template(combo).unwrap_or_else(|e| panic!("{combo:?}: {e}"));
        all.push_str(&out);
        all.push_str("\n---\n");
    }
    let f = d.write("all.yaml", &all);
    for v in ["1.29", "1.30", "1.31", "1.32", "1.33", "1.34"] {
        kubernetes_validate(v, &f).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    // Features land where they should.
    let full = template(COMBOS[1]).unwrap();
    for kind in ["ServiceAccount", "PodDisruptionBudget", "HorizontalPodAutoscaler"] {
        assert!(full.contains(&format!("kind: {kind}")), "{kind}");
    }
    assert!(!full.contains("checksum/config"), "in-place reload mode does not roll pods on config change");
    let default = template(&[]).unwrap();
    assert!(default.contains("checksum/config") && default.contains("--reload-on-config-change=false"));
    assert!(default.contains("terminationGracePeriodSeconds: 30"), "5 drain + 20 mercy + 5 margin");
    assert!(default.contains("maxUnavailable: 0") && default.contains("readOnlyRootFilesystem: true"));
    // No ServiceMonitor without the CRD's API.
    assert!(!template(COMBOS[2]).unwrap().contains("kind: ServiceMonitor"));
}

#[test]
#[cfg_attr(not(have_helm), ignore = "needs helm in .tools/bin: run bash scripts/test-deps.sh")]
fn bad_values_fail_at_install_time() {
    for bad in ["replicaCount=-1", "probes.port=99999", "kind=DaemonSet", "image.pullPolicy=Sometimes", "config.foo=1"]
    {
        let err = template(&[bad]).expect_err(bad);
        assert!(err.contains("values don't meet the specifications of the schema"), "{bad}: {err}");
    }
}

#[test]
#[cfg_attr(not(have_helm), ignore = "needs helm in .tools/bin: run bash scripts/test-deps.sh")]
fn rendered_configmap_is_accepted_by_podmaster() {
    let script = example_script();
    let ini = format!("config.ini=[uwsgi]\nsocket = :8080\nprobe-socket = :9191\npython-worker-override = {script}\n");
    let opt = format!("config.options.python-worker-override={script}");
    // With a CPU limit the options carry `processes = auto`.
    for values in [vec![opt.as_str()], vec![ini.as_str()], vec![opt.as_str(), "resources.limits.cpu=1500m"]] {
        let out = template(&values).unwrap();
        let cm = out.split("---").find(|d| d.contains("kind: ConfigMap")).unwrap();
        let d = TempDir::new("cmproj");
        let f = d.write("cm.yaml", cm);
        // As a manifest...
        let st = Command::new(BIN).args(["--check-config", "--yaml"]).arg(&f).output().unwrap();
        assert!(st.status.success(), "{values:?}: {}", String::from_utf8_lossy(&st.stderr));
        // ...and projected as files, the way the Deployment mounts it.
        let v: serde_yaml::Value = serde_yaml::from_str(cm).unwrap();
        let dir = d.path().join("etc");
        std::fs::create_dir(&dir).unwrap();
        for (k, val) in v["data"].as_mapping().unwrap() {
            std::fs::write(dir.join(k.as_str().unwrap()), val.as_str().unwrap()).unwrap();
        }
        let st = Command::new(BIN).args(["--check-config", "--config-dir"]).arg(&dir).output().unwrap();
        let text = String::from_utf8_lossy(&st.stdout);
        assert!(st.status.success(), "{values:?}: {}", String::from_utf8_lossy(&st.stderr));
        assert!(text.contains("socket = ") && text.contains("probe-socket = "), "{text}");
    }
}

#[test]
fn k8s_example_configmap_is_accepted_by_podmaster() {
    // The example points at /app paths of its image; check the shape with
    // the local aiohttp example instead of the image paths.
    let text = std::fs::read_to_string(format!("{ROOT}/examples/k8s/configmap.yaml")).unwrap();
    let local = text
        .replace("/app/aioserver.py", &format!("{ROOT}/examples/aiohttp/aioserver.py"))
        .replace("  virtualenv: /app/.venv\n", "");
    let d = TempDir::new("k8sex");
    let f = d.write("cm.yaml", &local);
    let out = Command::new(BIN).args(["--check-config", "--yaml"]).arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("metric = ")).count(), 2, "{text}");
}

#[test]
#[cfg_attr(
    not(have_kubernetes_validate),
    ignore = "needs kubernetes-validate in .tools/bin: run bash scripts/test-deps.sh"
)]
fn k8s_example_configmap_is_a_valid_kubernetes_manifest() {
    let f = std::path::PathBuf::from(format!("{ROOT}/examples/k8s/configmap.yaml"));
    kubernetes_validate("1.34", &f).unwrap();
}

/// The options the ConfigMap sets, from a rendered chart.
fn rendered_options(values: &[&str]) -> serde_yaml::Mapping {
    let out = template(values).unwrap();
    let cm = out.split("---").find(|d| d.contains("kind: ConfigMap")).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(cm).unwrap();
    v["data"].as_mapping().unwrap().clone()
}

#[test]
#[cfg_attr(not(have_helm), ignore = "needs helm in .tools/bin: run bash scripts/test-deps.sh")]
fn processes_is_auto_with_a_cpu_limit_and_the_watermark_follows_the_memory_limit() {
    let get = |m: &serde_yaml::Mapping, k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let defaults = rendered_options(&[]);
    assert_eq!(get(&defaults, "processes").as_deref(), Some("2"), "no CPU limit by default");
    assert_eq!(get(&defaults, "reload-on-cgroup-memory").as_deref(), Some("90%"), "the default has a memory limit");
    let cpu = rendered_options(&["resources.limits.cpu=1500m"]);
    assert_eq!(get(&cpu, "processes").as_deref(), Some("auto"));
    let explicit = rendered_options(&["resources.limits.cpu=1500m", "config.options.processes=4"]);
    assert_eq!(get(&explicit, "processes").as_deref(), Some("4"));
    let off = rendered_options(&["memoryWatermark="]);
    assert_eq!(get(&off, "reload-on-cgroup-memory"), None);
    let no_limit = rendered_options(&["resources.limits=null"]);
    assert_eq!(get(&no_limit, "reload-on-cgroup-memory"), None);
    let mark = rendered_options(&["memoryWatermark=80%"]);
    assert_eq!(get(&mark, "reload-on-cgroup-memory").as_deref(), Some("80%"));
    assert!(template(&["memoryWatermark=lots"]).is_err(), "the schema refuses a bad mark");
}
