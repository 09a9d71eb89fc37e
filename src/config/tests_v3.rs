//! Traefik v3's static configuration: its files (YAML and TOML), its flags, and the located
//! errors for what Pylon refuses.

use std::time::Duration;

use super::{load, tree::STATIC_NAMES, ConfigError, Loaded, Node, Origin, StoreKind};

const V3_YAML: &str = "\
entryPoints:
  web:
    address: ':80'
    http:
      redirections:
        entryPoint: { to: websecure, scheme: https }
  websecure:
    address: ':443'
    asDefault: true
    http:
      tls: { certResolver: le }
    transport:
      lifeCycle: { requestAcceptGraceTimeout: 5s, graceTimeOut: 20s }
      respondingTimeouts: { idleTimeout: 90s }
providers:
  etcd:
    endpoints: ['10.0.0.1:2379', '10.0.0.2:2379']
    rootKey: edge
    username: pylon
    password: secret
certificatesResolvers:
  le:
    acme:
      email: ops@example.com
      caServer: https://acme-staging-v02.api.letsencrypt.org/directory
      httpChallenge: { entryPoint: web }
  alpn:
    acme:
      email: ops@example.com
      tlsChallenge: {}
      keyType: EC384
api: { insecure: true }
ping: {}
metrics:
  prometheus: { addRoutersLabels: true }
log: { level: DEBUG }
accessLog: { format: json }
serversTransport:
  insecureSkipVerify: true
  maxIdleConnsPerHost: 7
  forwardingTimeouts: { dialTimeout: 3s }
";

fn yaml(text: &str) -> Result<Loaded, ConfigError> {
    load(Node::from_yaml("traefik.yml", text, STATIC_NAMES).unwrap())
}

fn toml(text: &str) -> Result<Loaded, ConfigError> {
    load(Node::from_toml("traefik.toml", text, STATIC_NAMES).unwrap())
}

fn messages(diagnostics: &[super::Diagnostic]) -> Vec<String> {
    diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn a_v3_file_means_what_traefik_v3_reads_in_it() {
    let loaded = yaml(V3_YAML).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", messages(&loaded.warnings));
    let c = &loaded.config;
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.default_entry_points, ["websecure"], "asDefault picks the default entrypoints");
    assert_eq!(c.entry_points["web"].redirect.as_ref().unwrap().entry_point, "websecure");
    assert_eq!(c.entry_points["websecure"].router_tls.as_ref().unwrap().cert_resolver.as_deref(), Some("le"));
    assert_eq!(c.lifecycle.request_accept_grace, Duration::from_secs(5));
    assert_eq!(c.lifecycle.grace_timeout, Duration::from_secs(20));
    assert_eq!(c.transport.idle_timeout, Duration::from_secs(90));
    assert!(c.transport.insecure_skip_verify);
    assert_eq!(c.transport.max_idle_per_host, 7);
    assert_eq!(c.transport.dial_timeout, Duration::from_secs(3));
    assert!(c.api.as_ref().is_some_and(|a| a.on_entry_point && a.entry_point == "traefik"));
    assert_eq!(c.ping.as_deref(), Some("traefik"));
    assert!(c.metrics.as_ref().is_some_and(|m| m.settings.routers));
    assert!(c.access_log.as_ref().is_some_and(|a| a.json));
    let store = loaded.store.as_ref().unwrap();
    assert_eq!(store.kind, StoreKind::Etcd);
    assert_eq!(store.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
    assert_eq!(store.prefix.as_deref(), Some("edge"));
    assert_eq!((store.username.as_deref(), store.password.as_deref()), (Some("pylon"), Some("secret")));

    let names: Vec<&str> = c.resolvers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alpn", "le"]);
    let (alpn, le) = (&c.resolvers[0], &c.resolvers[1]);
    assert!(alpn.tls_challenge && alpn.http_challenge.is_none());
    assert_eq!(le.http_challenge.as_deref(), Some("web"));
    assert_eq!(le.ca_server, "https://acme-staging-v02.api.letsencrypt.org/directory");
    assert!(!le.any_resolver && !le.on_host_rule);
    assert_eq!(c.resolver("le").map(|r| &r.name), Some(&le.name));
    assert!(c.resolver("other").is_none(), "a v3 router names its resolver exactly");
}

#[test]
fn the_same_file_in_toml_loads_the_same() {
    let text = "\
[entryPoints.web]
address = \":80\"
[entryPoints.web.http.redirections.entryPoint]
to = \"websecure\"
scheme = \"https\"
[entryPoints.websecure]
address = \":443\"
asDefault = true
[entryPoints.websecure.http.tls]
certResolver = \"le\"
[entryPoints.websecure.transport.lifeCycle]
requestAcceptGraceTimeout = \"5s\"
graceTimeOut = \"20s\"
[entryPoints.websecure.transport.respondingTimeouts]
idleTimeout = \"90s\"
[providers.etcd]
endpoints = [\"10.0.0.1:2379\", \"10.0.0.2:2379\"]
rootKey = \"edge\"
username = \"pylon\"
password = \"secret\"
[certificatesResolvers.le.acme]
email = \"ops@example.com\"
caServer = \"https://acme-staging-v02.api.letsencrypt.org/directory\"
[certificatesResolvers.le.acme.httpChallenge]
entryPoint = \"web\"
[certificatesResolvers.alpn.acme]
email = \"ops@example.com\"
keyType = \"EC384\"
[certificatesResolvers.alpn.acme.tlsChallenge]
[api]
insecure = true
[ping]
[metrics.prometheus]
addRoutersLabels = true
[log]
level = \"DEBUG\"
[accessLog]
format = \"json\"
[serversTransport]
insecureSkipVerify = true
maxIdleConnsPerHost = 7
[serversTransport.forwardingTimeouts]
dialTimeout = \"3s\"
";
    let (from_toml, from_yaml) = (toml(text).unwrap(), yaml(V3_YAML).unwrap());
    assert_eq!(from_toml.config, from_yaml.config);
    assert_eq!(from_toml.store, from_yaml.store);
}

#[test]
fn mixing_the_dialects_is_an_error_naming_both_keys() {
    let text = "[acme]\nemail = \"a@example.com\"\n\n[certificatesResolvers.le.acme]\nemail = \"a@example.com\"\n";
    let err = messages(&toml(text).unwrap_err().0);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("\"acme\" (traefik.toml:1:1)") && err[0].contains("\"certificatesresolvers\""), "{err:?}");
    let text = "entryPoints:\n  web:\n    address: ':80'\n    redirect: { entryPoint: x }\nlog: { level: INFO }\n";
    let err = messages(&yaml(text).unwrap_err().0);
    assert!(err[0].contains("entrypoints.web.redirect") && err[0].contains("\"log\" (traefik.yml:5:"), "{err:?}");
}

#[test]
fn v3_flags_enable_sections_and_fill_lists() {
    let flags = [
        ("entryPoints.web.address", ":80"),
        ("providers.etcd.endpoints", "a:2379,b:2379"),
        ("certificatesResolvers.le.acme.email", "ops@example.com"),
        ("certificatesResolvers.le.acme.tlsChallenge", "true"),
        ("api.insecure", "true"),
        ("ping", "true"),
        ("metrics.prometheus", "true"),
        ("accessLog", "false"),
    ];
    let pairs = flags
        .iter()
        .map(|(k, v)| (k.split('.').map(String::from).collect(), v.to_string(), Origin::Flag(format!("--{k}"))));
    let loaded = load(Node::from_pairs(pairs, STATIC_NAMES).unwrap()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", messages(&loaded.warnings));
    assert_eq!(loaded.store.unwrap().endpoints, ["a:2379", "b:2379"]);
    let c = loaded.config;
    assert!(c.resolvers[0].tls_challenge && c.resolvers[0].name == "le");
    assert!(c.ping.is_some() && c.metrics.is_some() && c.access_log.is_none());
}

#[test]
fn what_pylon_does_not_do_is_named_where_it_was_written() {
    let text = "\
entryPoints:
  web: { address: ':80' }
providers:
  docker: {}
  etcd:
    endpoints: ['a:2379']
    watchTimeout: 3s
log: { level: INFO, noColor: true }
";
    let loaded = yaml(text).unwrap();
    let warned = messages(&loaded.warnings);
    assert!(
        warned.iter().any(|w| w.starts_with("traefik.yml:4:")
            && w.contains("providers.docker is a Traefik provider that Pylon does not implement")),
        "{warned:?}"
    );
    assert!(
        warned.iter().any(|w| w.starts_with("traefik.yml:7:") && w.contains("\"providers.etcd.watchtimeout\"")),
        "{warned:?}"
    );
    assert!(warned.iter().any(|w| w.starts_with("traefik.yml:8:") && w.contains("log.nocolor")), "{warned:?}");

    for (bad, at, says) in [
        ("providers:\n  etcd:\n    tls: { insecureSkipVerify: true }\n", "traefik.yml:3:", "give tls.ca"),
        ("providers:\n  consul:\n    tls: { cert: /c.pem }\n", "traefik.yml:3:", "go together"),
        (
            "entryPoints:\n  a:\n    address: ':80'\n    transport: { lifeCycle: { graceTimeOut: 1s } }\n  b:\n    address: ':81'\n    transport: { lifeCycle: { graceTimeOut: 2s } }\n",
            "traefik.yml:7:",
            "one lifecycle to every entrypoint",
        ),
        ("certificatesResolvers:\n  le:\n    acme: { email: a@example.com }\n", "traefik.yml:3:", "needs httpChallenge"),
        (
            "certificatesResolvers:\n  le:\n    acme: { httpChallenge: { entryPoint: nope } }\n",
            "traefik.yml:3:",
            "\"nope\" does not exist",
        ),
        ("certificatesResolvers:\n  le: {}\n", "traefik.yml:2:", "has no acme section"),
        ("providers:\n  file: { watch: true }\n", "traefik.yml:2:", "needs filename or directory"),
        (
            "entryPoints:\n  w:\n    address: ':443'\n    http: { tls: { certResolver: nope } }\n",
            "traefik.yml:4:",
            "certificate resolver \"nope\" does not exist",
        ),
    ] {
        let errors = messages(&yaml(bad).unwrap_err().0);
        assert!(errors.iter().any(|e| e.starts_with(at) && e.contains(says)), "{bad}: {errors:?}");
    }
}

#[test]
fn the_file_provider_is_read_in_both_dialects() {
    use super::providers::{FileProvider, FileSource};
    let v1 = toml("[file]\ndirectory = \"/etc/pylon/dynamic\"\n").unwrap().config.file;
    let v3 = yaml("providers:\n  file: { directory: /etc/pylon/dynamic }\n").unwrap().config.file;
    let want = FileProvider { source: FileSource::Directory("/etc/pylon/dynamic".into()), watch: true };
    assert_eq!((v1.as_ref(), v3.as_ref()), (Some(&want), Some(&want)));
    let off = yaml("providers:\n  file: { filename: d.yml, watch: false }\n").unwrap().config.file.unwrap();
    assert_eq!(off, FileProvider { source: FileSource::File("d.yml".into()), watch: false });
}

#[test]
fn flags_of_either_form_lay_over_a_file_of_either_dialect() {
    let file = Node::from_toml(
        "traefik.toml",
        "logLevel = \"INFO\"\n[entryPoints.http]\naddress = \":80\"\n[etcd]\nendpoint = \"old:2379\"\nprefix = \"edge\"\n",
        STATIC_NAMES,
    )
    .unwrap();
    let pairs = [("providers.etcd.endpoints", "new:2379"), ("log.level", "DEBUG")].map(|(k, v)| {
        (k.split('.').map(String::from).collect::<Vec<_>>(), v.to_string(), Origin::Flag(format!("--{k}")))
    });
    let loaded = load(file.overlay(Node::from_pairs(pairs, STATIC_NAMES).unwrap())).unwrap();
    let store = loaded.store.unwrap();
    assert_eq!(
        (store.endpoints, store.prefix.as_deref()),
        (vec!["new:2379".to_string()], Some("edge")),
        "the flag wins"
    );
    assert_eq!(loaded.config.log_level, "debug");

    let file =
        Node::from_yaml("traefik.yml", "log: { level: INFO }\nentryPoints:\n  web: { address: ':80' }\n", STATIC_NAMES)
            .unwrap();
    let pairs = [(vec!["loglevel".to_string()], "ERROR".to_string(), Origin::Flag("--loglevel".into()))];
    let loaded = load(file.overlay(Node::from_pairs(pairs, STATIC_NAMES).unwrap())).unwrap();
    assert_eq!(loaded.config.log_level, "error", "--loglevel wins over log.level");

    let file = Node::from_yaml(
        "traefik.yml",
        "entryPoints:\n  web: { address: ':80' }\nserversTransport: { insecureSkipVerify: true, maxIdleConnsPerHost: 5 }\n",
        STATIC_NAMES,
    )
    .unwrap();
    let pairs =
        [(vec!["insecureSkipVerify".to_string()], "false".to_string(), Origin::Flag("--insecureSkipVerify".into()))];
    let loaded = load(file.overlay(Node::from_pairs(pairs, STATIC_NAMES).unwrap())).unwrap();
    assert!(!loaded.config.transport.insecure_skip_verify, "a v1.7 flag wins over a v3 file's key");
    assert_eq!(loaded.config.transport.max_idle_per_host, 5, "the file's other keys stay");
}
