//! The command line: `run` (the default), `storeconfig`, `acme`, `version`, and Traefik v1.7's
//! flags.
//! Named flags (`--consul.endpoint`, ...) are clap arguments with `PYLON_*` environment
//! variables; any other static key is set with a dotted flag (`--entryPoints.http.address=...`)
//! or Traefik 1.x's `--entryPoints='Name:http Address::80 ...'` form, which become overrides
//! laid over the file or the store.

use std::path::PathBuf;

use clap::{builder::BoolishValueParser, ArgAction, Parser, Subcommand};

use crate::config::Origin;

#[derive(Debug, Parser)]
#[command(
    name = "pylon",
    version,
    about = "A reverse proxy and ACME client whose replicas share all state through etcd, Consul or an embedded store",
    after_help = "Any static setting can also be given as a dotted flag in Traefik's style, for example\n  --entryPoints.http.address=127.0.0.2:80   --web.address=:8081   --acme.email=ops@example.com\nor as Traefik 1.x's  --entryPoints='Name:http Address::80 Redirect.EntryPoint:https'.\nThey override the file or the store. Flags override PYLON_* variables, which override the file."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub global: Global,
    /// Static settings from dotted flags, filled by [`parse`].
    #[arg(skip)]
    pub overrides: Vec<Override>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the proxy (the default)
    Run,
    /// Validate the static configuration file and write it to the store in one transaction,
    /// replacing what was stored before
    Storeconfig {
        /// Print the keys that would be written, and write nothing
        #[arg(long)]
        dry_run: bool,
        /// A dynamic configuration in Traefik's file-provider format (routers, services,
        /// certificates) to write under <prefix>/http/ and <prefix>/tls/, replacing what is there
        #[arg(long, value_name = "FILE")]
        dynamic: Option<std::path::PathBuf>,
    },
    /// Operate the cluster's ACME certificates: list, renew NAME, revoke NAME
    Acme {
        #[command(subcommand)]
        action: crate::control::acme::admin::Action,
    },
    /// Show the cluster from the store: every replica (version, configuration revision, last
    /// heartbeat), then every certificate with its lock holder, order in progress and failures
    Cluster,
    /// Print the version
    Version,
}

#[derive(Debug, Default, clap::Args)]
pub struct Global {
    /// The static configuration file (Traefik's traefik.toml)
    #[arg(short = 'c', long = "configfile", env = "PYLON_CONFIGFILE", global = true, value_name = "PATH")]
    pub configfile: Option<PathBuf>,

    /// Use Consul as the store
    #[arg(long = "consul", env = "PYLON_CONSUL", global = true, action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub consul: bool,
    /// Consul agent address
    #[arg(long = "consul.endpoint", env = "PYLON_CONSUL_ENDPOINT", global = true, value_name = "HOST:PORT")]
    pub consul_endpoint: Option<String>,
    /// Key prefix in Consul [default: traefik]
    #[arg(long = "consul.prefix", env = "PYLON_CONSUL_PREFIX", global = true, value_name = "PREFIX")]
    pub consul_prefix: Option<String>,
    /// Consul ACL token
    #[arg(
        long = "consul.token",
        env = "PYLON_CONSUL_TOKEN",
        global = true,
        value_name = "ACL",
        hide_env_values = true
    )]
    pub consul_token: Option<String>,

    /// Use etcd (v3 API) as the store
    #[arg(long = "etcd", env = "PYLON_ETCD", global = true, action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub etcd: bool,
    /// etcd endpoints
    #[arg(long = "etcd.endpoint", env = "PYLON_ETCD_ENDPOINT", global = true, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub etcd_endpoint: Option<String>,
    /// Key prefix in etcd [default: traefik]
    #[arg(long = "etcd.prefix", env = "PYLON_ETCD_PREFIX", global = true, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// etcd user name
    #[arg(long = "etcd.username", env = "PYLON_ETCD_USERNAME", global = true)]
    pub etcd_username: Option<String>,
    /// etcd password
    #[arg(long = "etcd.password", env = "PYLON_ETCD_PASSWORD", global = true, hide_env_values = true)]
    pub etcd_password: Option<String>,

    /// Log level: DEBUG, INFO, WARN or ERROR [default: the file's logLevel, else INFO]
    #[arg(long = "loglevel", env = "PYLON_LOGLEVEL", global = true)]
    pub loglevel: Option<String>,
    /// Validate the command line and the static configuration as the command would read them,
    /// print the warnings, and exit (2 on an error) without opening a store or binding a port
    #[arg(long = "check", global = true)]
    pub check: bool,
    /// Directory of the embedded store, used when neither Consul nor etcd is configured
    #[arg(long = "datadir", env = "PYLON_DATADIR", global = true, default_value = "./pylon-data")]
    pub datadir: PathBuf,
}

/// One static setting from the command line: its key path and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub path: Vec<String>,
    pub value: String,
    pub origin: Origin,
}

/// Flags clap knows, lowercased, so that `--logLevel` and `--configFile` work as in Traefik.
const NAMED: &[&str] = &[
    "configfile",
    "consul",
    "consul.endpoint",
    "consul.prefix",
    "consul.token",
    "etcd",
    "etcd.endpoint",
    "etcd.prefix",
    "etcd.username",
    "etcd.password",
    "loglevel",
    "datadir",
    "check",
    "dry-run",
    "dynamic",
    "help",
    "version",
];

/// Top-level static keys a `PYLON_*` variable may set (`PYLON_ENTRYPOINTS_WEB_ADDRESS`).
const ENV_SECTIONS: &[&str] = &[
    "entrypoints",
    "providers",
    "certificatesresolvers",
    "api",
    "ping",
    "metrics",
    "log",
    "accesslog",
    "serverstransport",
    "lifecycle",
    "global",
    "acme",
    "web",
    "consul",
    "etcd",
    "file",
    "defaultentrypoints",
    "respondingtimeouts",
    "forwardingtimeouts",
    "limits",
    "traefiklog",
    "insecureskipverify",
    "maxidleconnsperhost",
    "rootcas",
    "gracetimeout",
];

/// Static settings from `PYLON_*` variables, Traefik's `TRAEFIK_*` under Pylon's name: `_`
/// separates the key's segments, which are lowercased (entrypoint and resolver names too, as
/// Traefik does). Variables clap reads (`PYLON_CONSUL_ENDPOINT`, ...) and Kubernetes'
/// service links (`PYLON_API_SERVICE_HOST`, `PYLON_PORT_80_TCP`) are not settings.
pub fn env_overrides<I: IntoIterator<Item = (String, String)>>(vars: I) -> Vec<Override> {
    let mut out: Vec<Override> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("PYLON_")?;
            let lower = rest.to_ascii_lowercase();
            let path: Vec<String> = lower.split('_').map(String::from).collect();
            let named = NAMED.contains(&lower.replace('_', ".").as_str()) || lower == "storage_key";
            let link = lower.contains("_service_host")
                || lower.contains("_service_port")
                || lower.ends_with("_port")
                || lower.split("_port_").nth(1).is_some_and(|tail| tail.starts_with(|c: char| c.is_ascii_digit()));
            if named || link || !ENV_SECTIONS.contains(&path[0].as_str()) || path.iter().any(String::is_empty) {
                return None;
            }
            Some(Override { path, value, origin: Origin::Env(name) })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Parses the command line: named flags through clap, the rest into overrides, after the
/// `PYLON_*` variables' (flags win over variables, which win over the file).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, clap::Error> {
    // `vars()` would panic on a variable that is not UTF-8, whoever set it: such are skipped.
    let vars = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    parse_with_env(args, vars)
}

pub fn parse_with_env<I, E>(args: I, vars: E) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = String>,
    E: IntoIterator<Item = (String, String)>,
{
    let mut rest = Vec::new();
    let mut overrides = env_overrides(vars);
    for arg in args {
        let Some(flag) = arg.strip_prefix("--") else {
            rest.push(arg);
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let lower = name.to_ascii_lowercase();
        if NAMED.contains(&lower.as_str()) {
            rest.push(match value {
                Some(v) => format!("--{lower}={v}"),
                None => format!("--{lower}"),
            });
        } else if lower == "entrypoints" && value.is_some_and(|v| v.contains("Name:")) {
            overrides.extend(legacy_entrypoint(&arg, value.unwrap_or_default()));
        } else if name.contains('.') || value.is_some() {
            let path = name.split('.').map(String::from).collect();
            let origin = Origin::Flag(format!("--{name}"));
            overrides.push(Override { path, value: value.unwrap_or("true").to_string(), origin });
        } else {
            rest.push(arg);
        }
    }
    let mut cli = Cli::try_parse_from(rest)?;
    cli.overrides = overrides;
    if let Some(level) = &cli.global.loglevel {
        let origin = Origin::Flag("--loglevel".into());
        cli.overrides.push(Override { path: vec!["loglevel".into()], value: level.clone(), origin });
    }
    Ok(cli)
}

/// Traefik 1.x: `--entryPoints='Name:https Address::443 TLS Redirect.EntryPoint:x Compress:true'`.
fn legacy_entrypoint(arg: &str, spec: &str) -> Vec<Override> {
    let spec = spec.trim_matches(|c| c == '\'' || c == '"');
    let name = spec.split_whitespace().find_map(|w| w.strip_prefix("Name:")).unwrap_or_default().to_string();
    let origin = Origin::Flag(arg.to_string());
    let set = |path: &[&str], value: &str| Override {
        path: ["entrypoints", name.as_str()].iter().chain(path).map(|s| s.to_string()).collect(),
        value: value.to_string(),
        origin: origin.clone(),
    };
    let mut out = Vec::new();
    for word in spec.split_whitespace() {
        let (key, value) = word.split_once(':').unwrap_or((word, ""));
        match key.to_ascii_lowercase().as_str() {
            "name" => {}
            "address" => out.push(set(&["address"], value)),
            "tls" if value.is_empty() => out.push(set(&["tls"], "{}")),
            "tls" => {
                let (cert, key) = value.split_once(',').unwrap_or((value, ""));
                out.push(set(&["tls", "certificates", "0", "certfile"], cert));
                out.push(set(&["tls", "certificates", "0", "keyfile"], key));
            }
            "redirect.entrypoint" => out.push(set(&["redirect", "entrypoint"], value)),
            "redirect.permanent" => out.push(set(&["redirect", "permanent"], value)),
            "compress" => out.push(set(&["compress"], value)),
            other => out.push(set(&[other], value)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        std::iter::once("pylon").chain(list.iter().copied()).map(String::from).collect()
    }

    #[test]
    fn traefik_flags_parse_as_in_the_seed_manifests() {
        let cli = parse(args(&["--consul", "--consul.endpoint=traefik-consul:8500"])).unwrap();
        assert!(cli.global.consul);
        assert_eq!(cli.global.consul_endpoint.as_deref(), Some("traefik-consul:8500"));
        let cli = parse(args(&["storeconfig", "--dynamic=routes.toml"])).unwrap();
        assert!(matches!(cli.command, Some(Command::Storeconfig { dynamic: Some(_), .. })), "{cli:?}");
        assert!(cli.overrides.is_empty(), "--dynamic is storeconfig's, not a static key");
        let cli = parse(args(&["storeconfig", "--configfile=/config/traefik.toml"])).unwrap();
        assert!(matches!(cli.command, Some(Command::Storeconfig { dry_run: false, dynamic: None })));
        assert_eq!(cli.global.configfile.unwrap().to_str(), Some("/config/traefik.toml"));
    }

    #[test]
    fn dotted_flags_become_overrides() {
        let cli =
            parse(args(&["--entryPoints.http.address=127.0.0.2:80", "--logLevel=DEBUG", "--api.dashboard"])).unwrap();
        let paths: Vec<(String, &str)> = cli.overrides.iter().map(|o| (o.path.join("."), o.value.as_str())).collect();
        assert!(paths.contains(&("entryPoints.http.address".into(), "127.0.0.2:80")));
        assert!(paths.contains(&("api.dashboard".into(), "true")));
        assert!(paths.contains(&("loglevel".into(), "DEBUG")));
    }

    #[test]
    fn traefik_one_entrypoint_flags_are_understood() {
        let cli = parse(args(&[
            "--entryPoints=Name:http Address::80 Redirect.EntryPoint:https",
            "--entrypoints=Name:https Address::443 TLS",
        ]))
        .unwrap();
        let paths: Vec<(String, &str)> = cli.overrides.iter().map(|o| (o.path.join("."), o.value.as_str())).collect();
        assert!(paths.contains(&("entrypoints.http.address".into(), ":80")));
        assert!(paths.contains(&("entrypoints.http.redirect.entrypoint".into(), "https")));
        assert!(paths.contains(&("entrypoints.https.tls".into(), "{}")));
    }

    #[test]
    fn pylon_variables_are_traefiks_under_pylons_name_and_flags_win() {
        let vars = [
            ("PYLON_ENTRYPOINTS_WEB_ADDRESS", ":80"),
            ("PYLON_PROVIDERS_ETCD_ENDPOINTS", "a:2379,b:2379"),
            ("PYLON_CERTIFICATESRESOLVERS_LE_ACME_EMAIL", "ops@example.com"),
            ("PYLON_CERTIFICATESRESOLVERS_LE_ACME_TLSCHALLENGE", "true"),
            ("PYLON_CONSUL_ENDPOINT", "c:8500"),
            ("PYLON_API_SERVICE_HOST", "10.0.0.1"),
            ("PYLON_PORT_80_TCP_ADDR", "10.0.0.1"),
            ("PYLON_STORAGE_KEY", "k1:AAAA"),
            ("HOME", "/root"),
        ];
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let cli = parse_with_env(args(&["--entryPoints.web.address=:8000"]), vars).unwrap();
        let set: Vec<(String, &str)> = cli.overrides.iter().map(|o| (o.path.join("."), o.value.as_str())).collect();
        assert_eq!(
            set,
            [
                ("certificatesresolvers.le.acme.email".to_string(), "ops@example.com"),
                ("certificatesresolvers.le.acme.tlschallenge".into(), "true"),
                ("entrypoints.web.address".into(), ":80"),
                ("providers.etcd.endpoints".into(), "a:2379,b:2379"),
                ("entryPoints.web.address".into(), ":8000"),
            ]
        );
        let tree = crate::setup::with_overrides(crate::config::Node::empty(), &cli.overrides).unwrap();
        let loaded = crate::config::load(tree).unwrap();
        assert_eq!(loaded.config.entry_points["web"].address.port(), 8000, "the flag wins over the variable");
    }

    #[test]
    fn unknown_plain_flags_are_errors() {
        assert!(parse(args(&["--no-such-flag"])).is_err());
    }
}
