//! The operator's Kubernetes client with a kubeconfig whose client certificate is X.509 v1,
//! as old hand-made PKIs issue them (`openssl x509 -req` without extensions). Go clients,
//! KubeRay's among them, accept such a certificate; rustls does not, so the operator must
//! say what is wrong and how to fix it, and the fix it names must work.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, ensure};
use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl (needed to issue the test's client certificates)")?;
    ensure!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The admin kubeconfig with its user's certificate and key replaced by these files.
fn kubeconfig_with(admin: &Path, cert: &Path, key: &Path) -> anyhow::Result<Kubeconfig> {
    let mut kubeconfig = Kubeconfig::read_from(admin)?;
    let user = kubeconfig
        .auth_infos
        .first_mut()
        .and_then(|named| named.auth_info.as_mut())
        .context("admin kubeconfig has no user entry")?;
    let base64 = |path: &Path| -> anyhow::Result<String> {
        Ok(base64::engine::general_purpose::STANDARD.encode(std::fs::read(path)?))
    };
    // Round-trip through YAML: the key is a secret-string type kube does not let us build.
    let mut yaml = serde_yaml::to_value(&*user)?;
    yaml["client-certificate-data"] = base64(cert)?.into();
    yaml["client-key-data"] = base64(key)?.into();
    *user = serde_yaml::from_value(yaml)?;
    Ok(kubeconfig)
}

#[tokio::test]
async fn a_v1_client_certificate_is_refused_with_the_fix_and_v3_works() -> anyhow::Result<()> {
    let cluster = wasmray_e2e::cluster().await?;
    let pki = cluster.run_dir().join("pki");
    let dir = std::env::temp_dir().join(format!("wasmray-e2e-client-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = pki.join("ca.crt");
    let ca_key = pki.join("ca.key");
    let (ca, ca_key) = (ca.to_string_lossy(), ca_key.to_string_lossy());
    openssl(
        &dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "user.key",
        ],
    )?;
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-key",
            "user.key",
            "-subj",
            "/O=system:masters/CN=wasmray-e2e-v1",
            "-out",
            "user.csr",
        ],
    )?;
    let sign = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "x509", "-req", "-in", "user.csr", "-CA", &ca, "-CAkey", &ca_key,
        ];
        args.extend(["-set_serial", "1", "-days", "1", "-out", out]);
        args.extend(extra);
        openssl(&dir, &args)
    };
    // No extensions: openssl issues v1.
    sign("v1.crt", &[])?;
    std::fs::write(dir.join("v3.ext"), "extendedKeyUsage = clientAuth\n")?;
    sign("v3.crt", &["-extfile", "v3.ext"])?;
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.join("v1.crt"))
        .output()?;
    ensure!(
        String::from_utf8_lossy(&text.stdout).contains("Version: 1 (0x0)"),
        "the test certificate is not v1"
    );

    let admin = cluster.kubeconfig_path();
    let v1 = kubeconfig_with(admin, &dir.join("v1.crt"), &dir.join("user.key"))?;
    let v1_path = dir.join("v1.kubeconfig");
    std::fs::write(&v1_path, serde_yaml::to_string(&v1)?)?;

    // A Go client (kubectl of the control plane's release) accepts it, as KubeRay would.
    let output = Command::new(cluster.info().bin_dir.join("kubectl"))
        .arg(format!("--kubeconfig={}", v1_path.display()))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()?;
    ensure!(
        output.status.success() && output.stdout == b"wasmray-e2e-v1",
        "kubectl with the v1 certificate: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let metrics = Arc::new(wasmray::metrics::Metrics::default());
    let config = kube::Config::from_custom_kubeconfig(v1, &KubeConfigOptions::default()).await?;
    let error = wasmray::client::build(config, None, Arc::clone(&metrics))
        .err()
        .context("the operator's client took a v1 client certificate")?;
    let message = format!("{error:#}");
    ensure!(
        message.contains("X.509 v1") && message.contains("re-issue it as an X.509 v3"),
        "{message}"
    );

    // The fix the message names: the same key, certified as v3.
    let v3 = kubeconfig_with(admin, &dir.join("v3.crt"), &dir.join("user.key"))?;
    let config = kube::Config::from_custom_kubeconfig(v3, &KubeConfigOptions::default()).await?;
    let client = wasmray::client::build(config, None, metrics)?;
    client
        .apiserver_version()
        .await
        .context("the operator's client with the v3 certificate")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
