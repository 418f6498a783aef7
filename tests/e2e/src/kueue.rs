//! Kueue, built from its Go module (`tests/tools/kueue/build.sh`), running beside the test
//! control plane as a local process with its admission webhooks registered, so that the
//! API server calls Kueue's defaulting and validation as in a real installation.
//!
//! Out of a cluster, Kueue needs three things a deployment gets from cert-manager or its
//! own certificate rotator, which here would name a Service the API server cannot reach:
//! - a serving certificate for its webhook server: a CA and a certificate for 127.0.0.1
//!   are made per start, and the webhook configurations name `https://127.0.0.1:<port>`
//!   with that CA;
//! - with its certificate management off, it reads metrics certificates from the fixed
//!   path `/etc/kueue/metrics/certs/` (its metrics server is off here, but it exits when
//!   they are missing): the same certificate is written there;
//! - its webhook manifests (`config/components/webhook/manifests.yaml`) register 40-odd
//!   webhooks for every framework with `failurePolicy: Fail`: only those for RayJob,
//!   RayCluster and Kueue's own kinds are kept, and each is limited to namespaces labelled
//!   [`NAMESPACE_LABEL`], so no other test's objects ever wait on Kueue.
//!
//! The process dies with the thread that started it (`setpriv --pdeathsig`) and
//! [`Kueue::stop`] removes the webhook configurations.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::TestCluster;

/// The namespace label that opts a namespace's objects into Kueue's webhooks.
pub const NAMESPACE_LABEL: (&str, &str) = ("wasmray-test/kueue", "true");
/// Kueue's own namespace (its default).
const KUEUE_NAMESPACE: &str = "kueue-system";
/// The directory Kueue reads its metrics certificates from when it manages none itself.
const METRICS_CERTS: &str = "/etc/kueue/metrics/certs";
const FIELD_MANAGER: &str = "wasmray-e2e-kueue";
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running Kueue.
pub struct Kueue {
    child: Child,
    client: Client,
    webhooks: [String; 2],
    pub log: PathBuf,
}

/// The directory `tests/tools/kueue/build.sh` fills (built on first use, cached after).
fn build() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WASMRAY_KUEUE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/kueue/build.sh");
    let output = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// A CA and a serving certificate for 127.0.0.1 it signed: (CA PEM, cert PEM, key PEM).
fn certificates() -> anyhow::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmray-e2e kueue CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Kueue's webhook manifests, cut down to RayJob, RayCluster and Kueue's own kinds, pointed
/// at `https://127.0.0.1:<port>` and limited to labelled namespaces.
fn webhook_configurations(manifests: &str, port: u16, ca_pem: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize as _;
    // Serialised as base64, as `caBundle` wants.
    let ca_bundle = serde_json::to_value(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()))?;
    let mut configurations = Vec::new();
    for document in serde_yaml::Deserializer::from_str(manifests) {
        let mut configuration = Value::deserialize(document)?;
        if configuration.is_null() {
            continue;
        }
        let name = configuration["metadata"]["name"]
            .as_str()
            .context("a webhook configuration without a name")?
            .to_owned();
        configuration["metadata"] = json!({"name": format!("wasmray-e2e-kueue-{name}")});
        let webhooks = configuration["webhooks"]
            .as_array()
            .context("a webhook configuration without webhooks")?;
        let kept: Vec<Value> = webhooks
            .iter()
            .filter_map(|webhook| {
                let path = webhook["clientConfig"]["service"]["path"].as_str()?;
                let wanted = [
                    "-ray-io-v1-rayjob",
                    "-ray-io-v1-raycluster",
                    "-kueue-x-k8s-io-",
                ]
                .iter()
                .any(|part| path.contains(part));
                wanted.then(|| {
                    let mut webhook = webhook.clone();
                    webhook["clientConfig"] = json!({
                        "url": format!("https://127.0.0.1:{port}{path}"),
                        "caBundle": ca_bundle,
                    });
                    webhook["namespaceSelector"] =
                        json!({"matchLabels": {NAMESPACE_LABEL.0: NAMESPACE_LABEL.1}});
                    webhook
                })
            })
            .collect();
        configuration["webhooks"] = Value::Array(kept);
        configurations.push(configuration);
    }
    Ok(configurations)
}

impl Kueue {
    /// Builds (or finds) Kueue, installs its CRDs, starts it against `cluster` and registers
    /// its webhooks; returns once they answer.
    pub async fn start(cluster: &TestCluster) -> anyhow::Result<Kueue> {
        let dir = tokio::task::spawn_blocking(build).await??;
        let client = cluster.client().await?;
        let mut crds: Vec<PathBuf> = std::fs::read_dir(dir.join("crds"))?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()?;
        crds.sort();
        let crds: Vec<&Path> = crds.iter().map(PathBuf::as_path).collect();
        crate::crds::apply_crd_files(&client, &crds).await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        match namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": KUEUE_NAMESPACE}}))?,
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(error.into()),
        }

        let run = cluster.run_dir().join("kueue");
        let certs = run.join("certs");
        std::fs::create_dir_all(&certs)?;
        let (ca, cert, key) = certificates()?;
        for directory in [certs.as_path(), Path::new(METRICS_CERTS)] {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("creating {}", directory.display()))?;
            std::fs::write(directory.join("tls.crt"), &cert)?;
            std::fs::write(directory.join("tls.key"), &key)?;
        }
        let port = free_port()?;
        let config = run.join("config.yaml");
        std::fs::write(
            &config,
            serde_json::to_string_pretty(&json!({
                "apiVersion": "config.kueue.x-k8s.io/v1beta2",
                "kind": "Configuration",
                "namespace": KUEUE_NAMESPACE,
                "health": {"healthProbeBindAddress": "127.0.0.1:0"},
                "metrics": {"bindAddress": "0"},
                "webhook": {"host": "127.0.0.1", "port": port, "certDir": certs},
                "leaderElection": {"leaderElect": false},
                "internalCertManagement": {"enable": false},
                // Its aggregated visibility API would need a Service the API server dials.
                "featureGates": {"VisibilityOnDemand": false},
                "integrations": {"frameworks": ["ray.io/rayjob", "ray.io/raycluster"]},
            }))?,
        )?;
        let log = run.join("kueue.log");
        let output = std::fs::File::create(&log)?;
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(dir.join("bin/kueue"))
            .arg(format!("--config={}", config.display()))
            .arg(format!(
                "--kubeconfig={}",
                cluster.kubeconfig_path().display()
            ))
            .stdout(output.try_clone()?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .context("starting kueue")?;
        let mut kueue = Kueue {
            child,
            client: client.clone(),
            webhooks: [String::new(), String::new()],
            log,
        };
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = kueue.child.try_wait()? {
                bail!("kueue exited ({status}); see {}", kueue.log.display());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "kueue's webhook server not up within {START_TIMEOUT:?}; see {}",
                    kueue.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let manifests = std::fs::read_to_string(dir.join("webhook/manifests.yaml"))?;
        for (index, configuration) in webhook_configurations(&manifests, port, &ca)?
            .into_iter()
            .enumerate()
            .take(2)
        {
            let name = configuration["metadata"]["name"]
                .as_str()
                .context("name")?
                .to_owned();
            let apply = PatchParams::apply(FIELD_MANAGER).force();
            match configuration["kind"].as_str() {
                Some("MutatingWebhookConfiguration") => {
                    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
                    api.patch(&name, &apply, &Patch::Apply(&configuration))
                        .await?;
                }
                Some("ValidatingWebhookConfiguration") => {
                    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
                    api.patch(&name, &apply, &Patch::Apply(&configuration))
                        .await?;
                }
                other => bail!("unexpected kind {other:?} in Kueue's webhook manifests"),
            }
            kueue.webhooks[index] = name;
        }
        Ok(kueue)
    }

    /// Opts `namespace` into Kueue's webhooks.
    pub async fn admit_namespace(&self, namespace: &str) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .patch(
                namespace,
                &PatchParams::default(),
                &Patch::Merge(
                    &json!({"metadata": {"labels": {NAMESPACE_LABEL.0: NAMESPACE_LABEL.1}}}),
                ),
            )
            .await?;
        Ok(())
    }

    /// Removes the webhook configurations, then stops Kueue.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        for name in self.webhooks.iter().filter(|name| !name.is_empty()) {
            let deleted = match mutating.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(_) => validating
                    .delete(name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            };
            deleted.with_context(|| format!("deleting webhook configuration {name}"))?;
        }
        self.child.kill().await?;
        Ok(())
    }

    /// The last lines of Kueue's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Kueue {
    fn drop(&mut self) {
        // A test that fails before `stop`: the process goes; the webhooks, limited to
        // labelled namespaces, bother no one else.
        let _ = self.child.start_kill();
    }
}
