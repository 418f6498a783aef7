//! `wasmray`: the WasmRay operator. Serves KubeRay's `ray.io/v1` API with decisions made by
//! WebAssembly plugins; runs against the current kubeconfig or the in-cluster config.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use wasmray::controller::{self, ControllerConfig, plugin::PluginHost};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The WasmRay operator.
#[derive(Debug, Parser)]
#[command(name = "wasmray", version, about)]
struct Flags {
    /// Namespaces to watch (repeatable or comma-separated); all namespaces when not given.
    #[arg(
        long = "watch-namespace",
        value_delimiter = ',',
        env = "WATCH_NAMESPACE"
    )]
    watch_namespace: Vec<String>,

    /// Reconciles running at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    reconcile_concurrency: u16,

    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Feature gates as `Name=true|false,...` (KubeRay's gates, e.g.
    /// RayClusterStatusConditions, RayMultiHostIndexing).
    #[arg(long, value_delimiter = ',', value_parser = parse_feature_gate)]
    feature_gates: Vec<(String, bool)>,

    /// Directory for compiled plugin code, so restarts skip compilation.
    #[arg(long, env = "WASMRAY_PLUGIN_CACHE_DIR")]
    plugin_cache_dir: Option<PathBuf>,

    /// Wait this long for related changes to settle before reconciling (milliseconds).
    #[arg(long, default_value_t = 0)]
    reconcile_debounce_ms: u64,

    /// Honour the `wasmray.io/dashboard-address` RayCluster annotation instead of the head
    /// Service's address. For tests and demos only: with it, anyone who may annotate a
    /// RayCluster (or RayJob) picks the address the operator calls.
    #[arg(long)]
    allow_dashboard_address_override: bool,
}

fn parse_feature_gate(text: &str) -> Result<(String, bool), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("feature gate {text:?} is not Name=true|false"))?;
    let enabled = value
        .trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| format!("feature gate {name}: {value:?} is not true or false"))?;
    Ok((name.trim().to_owned(), enabled))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    init_logging(flags.log_format);

    let plugins = PluginHost::with_builtins(flags.plugin_cache_dir.as_deref())
        .await
        .context("loading the built-in plugins")?;
    let kube_config = kube::Config::infer()
        .await
        .context("no kubeconfig and no in-cluster configuration")?;
    let client = kube::Client::try_from(controller::with_user_agent(
        kube_config,
        controller::USER_AGENT,
    ))
    .context("building the Kubernetes client")?;

    let config = ControllerConfig {
        namespaces: flags
            .watch_namespace
            .iter()
            .map(|namespace| namespace.trim().to_owned())
            .filter(|namespace| !namespace.is_empty())
            .collect(),
        concurrency: flags.reconcile_concurrency,
        debounce: Duration::from_millis(flags.reconcile_debounce_ms),
        feature_gates: flags.feature_gates.into_iter().collect::<BTreeMap<_, _>>(),
        settings: controller::settings_from_env(|name| std::env::var(name).ok()),
        allow_dashboard_address_override: flags.allow_dashboard_address_override,
        ..ControllerConfig::default()
    };
    tracing::info!(
        namespaces = ?config.namespaces,
        concurrency = config.concurrency,
        plugins = ?plugins.describe(),
        "starting"
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    controller::run(client, plugins, config, stopped).await;
    Ok(())
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_kuberay() {
        let flags = Flags::try_parse_from([
            "wasmray",
            "--watch-namespace",
            "a,b",
            "--watch-namespace=c",
            "--reconcile-concurrency",
            "8",
            "--log-format",
            "json",
            "--feature-gates",
            "RayMultiHostIndexing=true,RayClusterStatusConditions=False",
        ])
        .unwrap();
        assert_eq!(flags.watch_namespace, ["a", "b", "c"]);
        assert_eq!(flags.reconcile_concurrency, 8);
        assert_eq!(flags.log_format, LogFormat::Json);
        assert_eq!(
            flags.feature_gates,
            [
                ("RayMultiHostIndexing".to_owned(), true),
                ("RayClusterStatusConditions".to_owned(), false)
            ]
        );
        assert!(!flags.allow_dashboard_address_override);
        let overriding =
            Flags::try_parse_from(["wasmray", "--allow-dashboard-address-override"]).unwrap();
        assert!(overriding.allow_dashboard_address_override);
        assert!(Flags::try_parse_from(["wasmray", "--reconcile-concurrency", "0"]).is_err());
        assert!(Flags::try_parse_from(["wasmray", "--feature-gates", "X=maybe"]).is_err());
    }
}
