//! Settings: layered with the `config` crate exactly as the contract's §2 says, validated
//! before anything connects. Secrets are wrapped in `Secret`, whose `Debug` never shows them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::account::Market;
use crate::binance::sign::{KeyType, Signer};

mod accounts;
pub use accounts::AccountSpec;

/// The defaults, built into the binary so it runs from any directory.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

/// A string that must never be printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "<set>" } else { "<unset>" })
    }
}

/// A configuration problem: the key and what is wrong with it. Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub account_id: String,
    /// A TOML file of `[[accounts]]` (CONTRACT §7); empty: the one account of `binance.*`.
    pub accounts_file: String,
    pub binance: BinanceSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub shutdown: ShutdownSettings,
    pub runtime: RuntimeSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BinanceSettings {
    pub market: String,
    /// `production` or `testnet`: the default endpoints (SPEC §5).
    pub env: String,
    pub api_key: Secret,
    pub api_secret: Secret,
    /// `hmac`, `ed25519` or `rsa`: how `api_secret` signs.
    pub key_type: String,
    pub rest_url: String,
    pub ws_url: String,
    pub recv_window_ms: u64,
    pub reconcile_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub rotate_after_secs: u64,
    pub keepalive_secs: u64,
    pub max_frame_bytes: usize,
    pub rest_timeout_secs: u64,
    pub reconnect_max_backoff_ms: u64,
    /// USD-M: the event types asked for in the stream URL (Binance's allow list).
    #[serde(deserialize_with = "names_list")]
    pub usdm_events: Vec<String>,
    /// A ping our side sent that is not answered (by any frame) within this bound marks the
    /// connection dead.
    pub pong_timeout_secs: u64,
    /// Spot: user-data subscriptions carried by one WebSocket API connection (Binance: ≤ 1,000).
    pub max_subscriptions_per_connection: usize,
    /// REQUEST_WEIGHT per minute this process may use per market (= per IP); 0: Binance's
    /// published limit (`rateLimits` of exchangeInfo, else 6,000 Spot / 2,400 USD-M).
    pub rest_weight_limit: u32,
    /// Share of the weight limit the process plans to use (headroom for other programs on the
    /// same IP and for the estimate being short), in percent.
    pub rest_weight_share_pct: u32,
    /// Snapshots (resyncs) of one market in flight at once; the others queue.
    pub snapshot_concurrency: usize,
}

/// A list of names: a TOML array, or one string separated by `/` or `,` (environment variables).
fn names_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Joined(String),
    }
    let names = match Names::deserialize(d)? {
        Names::List(l) => l,
        Names::Joined(s) => s.split(['/', ',']).map(str::to_owned).collect(),
    };
    Ok(names
        .into_iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect())
}

#[derive(Debug, Clone, Deserialize)]
pub struct PostgresSettings {
    pub url: Secret,
    pub max_connections: u32,
    pub min_connections: u32,
    pub history_limit: usize,
    /// Group commit: an idle writer gathers changes this long before its transaction.
    pub linger_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: Secret,
    pub prefix: String,
    /// Entries kept (about) in each account's `P:changes` stream; 0 disables the stream.
    pub stream_maxlen: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub listen: String,
    pub token: Secret,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShutdownSettings {
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeSettings {
    /// 1: tokio's current-thread scheduler; more: its multi-thread scheduler with that many.
    pub worker_threads: usize,
}

impl Settings {
    /// Loads from the process environment (and `$CREDENTIALS_DIRECTORY` files).
    pub fn load(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut env: HashMap<String, String> = std::env::vars().collect();
        if let Some(dir) = env.get("CREDENTIALS_DIRECTORY").cloned() {
            for (file, var) in [
                ("binance_api_key", "BINANCE_API_KEY"),
                ("binance_api_secret", "BINANCE_API_SECRET"),
                ("database_url", "DATABASE_URL"),
                ("redis_url", "REDIS_URL"),
            ] {
                if let Ok(v) = std::fs::read_to_string(Path::new(&dir).join(file)) {
                    env.insert(var.to_owned(), v.trim().to_owned());
                }
            }
        }
        Settings::load_from(config_file, &env)
    }

    /// Loads from the given variables instead of the process environment (tests).
    pub fn load_from(
        config_file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let mut b = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = config_file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            b = b.add_source(File::from(path).required(true));
        }
        let prefixed: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("ACCTSTATE__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        b = b.add_source(
            Environment::with_prefix("ACCTSTATE")
                .prefix_separator("__")
                .separator("__")
                .source(Some(prefixed)),
        );
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let database_url = get("DATABASE_URL").or_else(|| pg_url_from_parts(env));
        let port = get("PORT").map(|p| format!("0.0.0.0:{p}"));
        let override_opt = |b: config::ConfigBuilder<config::builder::DefaultState>,
                            key: &str,
                            v: Option<String>| {
            b.set_override_option(key, v)
                .map_err(|e| ConfigError::new(key, e.to_string()))
        };
        b = override_opt(b, "postgres.url", database_url)?;
        b = override_opt(b, "redis.url", get("REDIS_URL"))?;
        b = override_opt(b, "binance.api_key", get("BINANCE_API_KEY"))?;
        b = override_opt(b, "binance.api_secret", get("BINANCE_API_SECRET"))?;
        b = override_opt(b, "http.listen", port)?;
        let cfg = b.build().map_err(config_error)?;
        let mut s: Settings = cfg.try_deserialize().map_err(config_error)?;
        s.postgres.url = Secret::new(with_required_ssl(s.postgres.url.expose()));
        s.validate()?;
        Ok(s)
    }

    pub fn market(&self) -> Market {
        // validate() guarantees the value.
        self.binance.market.parse().unwrap_or(Market::Spot)
    }

    /// `binance.key_type` (validated).
    pub fn key_type(&self) -> KeyType {
        self.binance.key_type.parse().unwrap_or(KeyType::Hmac)
    }

    /// Binance's testnet rather than production (`binance.env`).
    pub fn testnet(&self) -> bool {
        self.binance.env == "testnet"
    }

    /// `binance.rest_url`, else the environment's default (`default_rest_url`).
    pub fn rest_url(&self) -> String {
        match self.binance.rest_url.as_str() {
            "" => default_rest_url(self.market(), self.testnet()).into(),
            u => u.trim_end_matches('/').into(),
        }
    }

    /// `binance.ws_url`, else the environment's default.
    pub fn ws_url(&self) -> String {
        match self.binance.ws_url.as_str() {
            "" => default_ws_url(self.market(), self.testnet()).into(),
            u => u.trim_end_matches('/').into(),
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.http
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// The credentials `run` needs; named when missing. (With `accounts_file`, every entry's
    /// credentials are checked by `accounts()`.)
    pub fn require_credentials(&self) -> Result<(), ConfigError> {
        if !self.accounts_file.is_empty() {
            return self.accounts().map(|_| ());
        }
        let missing: Vec<&str> = [
            ("binance.api_key (BINANCE_API_KEY)", &self.binance.api_key),
            (
                "binance.api_secret (BINANCE_API_SECRET)",
                &self.binance.api_secret,
            ),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_set())
        .map(|(k, _)| k)
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::new(
                missing.join(", "),
                "required by `run` but not set",
            ))
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.account_id;
        if !valid_account_id(id) {
            return Err(ConfigError::new(
                "account_id",
                format!("must match [a-zA-Z0-9_-]{{1,64}}, got `{id}`"),
            ));
        }
        self.binance
            .market
            .parse::<Market>()
            .map_err(|e| ConfigError::new("binance.market", e))?;
        let key_type: KeyType = self
            .binance
            .key_type
            .parse()
            .map_err(|e| ConfigError::new("binance.key_type", e))?;
        if self.binance.api_secret.is_set() {
            Signer::new(key_type, self.binance.api_secret.expose())
                .map_err(|e| ConfigError::new("binance.api_secret", e.to_string()))?;
        }
        if !matches!(self.binance.env.as_str(), "production" | "testnet") {
            return Err(ConfigError::new(
                "binance.env",
                format!(
                    "must be `production` or `testnet`, got `{}`",
                    self.binance.env
                ),
            ));
        }
        check_url(
            "binance.rest_url",
            &self.binance.rest_url,
            &["http", "https"],
        )?;
        check_url("binance.ws_url", &self.binance.ws_url, &["ws", "wss"])?;
        if !(1..=60_000).contains(&self.binance.recv_window_ms) {
            return Err(ConfigError::new(
                "binance.recv_window_ms",
                "must be between 1 and 60000",
            ));
        }
        for (key, v) in [
            ("binance.idle_timeout_secs", self.binance.idle_timeout_secs),
            ("binance.rotate_after_secs", self.binance.rotate_after_secs),
            ("binance.keepalive_secs", self.binance.keepalive_secs),
            ("binance.rest_timeout_secs", self.binance.rest_timeout_secs),
            ("binance.pong_timeout_secs", self.binance.pong_timeout_secs),
            (
                "shutdown.drain_timeout_secs",
                self.shutdown.drain_timeout_secs,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        if !(1..=1000).contains(&self.binance.max_subscriptions_per_connection) {
            return Err(ConfigError::new(
                "binance.max_subscriptions_per_connection",
                "must be between 1 and 1000 (Binance's limit per connection)",
            ));
        }
        if !(1..=100).contains(&self.binance.rest_weight_share_pct) {
            return Err(ConfigError::new(
                "binance.rest_weight_share_pct",
                "must be between 1 and 100",
            ));
        }
        if self.binance.snapshot_concurrency == 0 {
            return Err(ConfigError::new(
                "binance.snapshot_concurrency",
                "must be at least 1",
            ));
        }
        if self.binance.reconnect_max_backoff_ms < 250 {
            return Err(ConfigError::new(
                "binance.reconnect_max_backoff_ms",
                "must be at least 250",
            ));
        }
        self.validate_usdm_events()?;
        if self.binance.max_frame_bytes < 1024 {
            return Err(ConfigError::new(
                "binance.max_frame_bytes",
                "must be at least 1024",
            ));
        }
        check_url(
            "postgres.url",
            self.postgres.url.expose(),
            &["postgres", "postgresql"],
        )?;
        if self.postgres.max_connections == 0 {
            return Err(ConfigError::new(
                "postgres.max_connections",
                "must be at least 1",
            ));
        }
        if self.postgres.min_connections > self.postgres.max_connections {
            return Err(ConfigError::new(
                "postgres.min_connections",
                "must not exceed postgres.max_connections",
            ));
        }
        if self.postgres.linger_ms > 1_000 {
            return Err(ConfigError::new(
                "postgres.linger_ms",
                "must be at most 1000 (it delays durability)",
            ));
        }
        if !(1..=64).contains(&self.runtime.worker_threads) {
            return Err(ConfigError::new(
                "runtime.worker_threads",
                "must be between 1 and 64",
            ));
        }
        if self.postgres.history_limit == 0 {
            return Err(ConfigError::new(
                "postgres.history_limit",
                "must be at least 1",
            ));
        }
        check_url("redis.url", self.redis.url.expose(), &["redis", "rediss"])?;
        let p = &self.redis.prefix;
        if p.is_empty() || p.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(ConfigError::new(
                "redis.prefix",
                "must be non-empty, without spaces or `:`",
            ));
        }
        self.http.listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "http.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:8080",
                    self.http.listen
                ),
            )
        })?;
        if !matches!(self.log.format.as_str(), "json" | "pretty") {
            return Err(ConfigError::new(
                "log.format",
                format!("must be `json` or `pretty`, got `{}`", self.log.format),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", e.to_string()))?;
        Ok(())
    }
}

impl Settings {
    /// `binance.usdm_events`: known event types only, `listenKeyExpired` among them (without it
    /// a lapsed key would never be noticed: Binance filters it out like any other type).
    fn validate_usdm_events(&self) -> Result<(), ConfigError> {
        let key = "binance.usdm_events";
        let known = &crate::binance::convert::USDM_EVENT_TYPES;
        let events = &self.binance.usdm_events;
        if let Some(bad) = events.iter().find(|e| !known.contains(&e.as_str())) {
            return Err(ConfigError::new(
                key,
                format!(
                    "`{bad}` is not a USD-M user-data event type (one of {})",
                    known.join(", ")
                ),
            ));
        }
        if !events.iter().any(|e| e == "listenKeyExpired") {
            return Err(ConfigError::new(
                key,
                "must include `listenKeyExpired`: Binance delivers only the listed types, and without it an expired listenKey goes unnoticed",
            ));
        }
        Ok(())
    }
}

/// The account id rule of CONTRACT §2: `[a-zA-Z0-9_-]{1,64}`.
pub fn valid_account_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A market's REST base URL in production or on the testnet (SPEC §5: the USD-M testnet's REST
/// host is `demo-fapi.binance.com` per Binance's USD-M general-info page of 2026; the JS
/// connector still names `testnet.binancefuture.com`, an older alias).
pub fn default_rest_url(market: Market, testnet: bool) -> &'static str {
    match (market, testnet) {
        (Market::Spot, false) => "https://api.binance.com",
        (Market::Usdm, false) => "https://fapi.binance.com",
        (Market::Spot, true) => "https://testnet.binance.vision",
        (Market::Usdm, true) => "https://demo-fapi.binance.com",
    }
}

/// A market's user-data WebSocket URL in production or on the testnet.
pub fn default_ws_url(market: Market, testnet: bool) -> &'static str {
    match (market, testnet) {
        (Market::Spot, false) => "wss://ws-api.binance.com:443/ws-api/v3",
        (Market::Usdm, false) => "wss://fstream.binance.com",
        (Market::Spot, true) => "wss://ws-api.testnet.binance.vision/ws-api/v3",
        (Market::Usdm, true) => "wss://fstream.binancefuture.com",
    }
}

fn config_error(e: config::ConfigError) -> ConfigError {
    // The config crate's messages name the key ("... for key `postgres.max_connections`").
    let msg = e.to_string();
    let key = msg
        .split("key `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or("configuration")
        .to_owned();
    ConfigError::new(key, msg)
}

/// Checks an optional URL: empty is fine, anything else must parse with one of the schemes.
/// The message never repeats the URL (it may hold a password).
fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Ok(());
    }
    match url::Url::parse(value) {
        Ok(u) if schemes.contains(&u.scheme()) => Ok(()),
        Ok(u) => Err(ConfigError::new(
            key,
            format!(
                "scheme `{}` is not one of {}",
                u.scheme(),
                schemes.join(", ")
            ),
        )),
        Err(e) => Err(ConfigError::new(key, format!("not a valid URL ({e})"))),
    }
}

/// Builds a Postgres URL from the libpq variables, if PGHOST or PGDATABASE is set.
fn pg_url_from_parts(env: &HashMap<String, String>) -> Option<String> {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
    if get("PGHOST").is_none() && get("PGDATABASE").is_none() {
        return None;
    }
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let host = get("PGHOST").map_or("localhost", |v| v.as_str());
    let port = get("PGPORT").map_or("5432", |v| v.as_str());
    let user = get("PGUSER").map_or_else(|| "postgres".to_owned(), |v| enc(v));
    let auth = match get("PGPASSWORD") {
        Some(p) => format!("{user}:{}", enc(p)),
        None => user,
    };
    let db = get("PGDATABASE").map_or_else(|| "postgres".to_owned(), |v| enc(v));
    Some(format!("postgres://{auth}@{host}:{port}/{db}"))
}

/// Adds `sslmode=require` for Railway and Neon hosts unless the URL sets sslmode.
pub fn with_required_ssl(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let needs_tls =
        host.ends_with(".railway.app") || host.ends_with(".rlwy.net") || host.contains("neon");
    let has_mode = parsed.query_pairs().any(|(k, _)| k == "sslmode");
    if !needs_tls || has_mode {
        return url.to_owned();
    }
    let sep = if parsed.query().is_some() { '&' } else { '?' };
    format!("{url}{sep}sslmode=require")
}

/// The URL without its password, for logs and `check`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load() {
        let s = Settings::load_from(None, &env(&[])).unwrap();
        assert_eq!(s.account_id, "main");
        assert_eq!(s.market(), Market::Spot);
        assert_eq!(s.postgres.max_connections, 10);
        assert_eq!(s.postgres.min_connections, 2);
        assert_eq!(s.redis.prefix, "acctstate");
        assert_eq!(s.rest_url(), "https://api.binance.com");
        assert_eq!(s.shutdown.drain_timeout_secs, 10);
        assert_eq!(
            s.binance.usdm_events,
            crate::binance::convert::USDM_EVENT_TYPES.map(String::from)
        );
    }

    #[test]
    fn key_types_are_checked_before_anything_connects() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let pem = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32])
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        let ok = Settings::load_from(
            None,
            &env(&[
                ("ACCTSTATE__BINANCE__KEY_TYPE", "ed25519"),
                ("BINANCE_API_SECRET", &pem),
            ]),
        )
        .unwrap();
        assert_eq!(ok.key_type(), KeyType::Ed25519);
        assert!(!format!("{ok:?}").contains("PRIVATE KEY"));
        for (key_type, secret) in [
            ("rsa", pem.as_str()),
            ("hmac", &pem),
            ("ed25519", "hmacsecret"),
        ] {
            let err = Settings::load_from(
                None,
                &env(&[
                    ("ACCTSTATE__BINANCE__KEY_TYPE", key_type),
                    ("BINANCE_API_SECRET", secret),
                ]),
            )
            .unwrap_err();
            assert_eq!(err.key, "binance.api_secret", "{err}");
            let body = pem.lines().nth(1).unwrap_or_default();
            assert!(
                !err.to_string().contains(body) && !err.to_string().contains("hmacsecret"),
                "{err}"
            );
        }
    }

    #[test]
    fn testnet_defaults_and_explicit_urls_win() {
        let spot =
            Settings::load_from(None, &env(&[("ACCTSTATE__BINANCE__ENV", "testnet")])).unwrap();
        assert!(spot.testnet());
        assert_eq!(spot.rest_url(), "https://testnet.binance.vision");
        assert_eq!(
            spot.ws_url(),
            "wss://ws-api.testnet.binance.vision/ws-api/v3"
        );
        let usdm = Settings::load_from(
            None,
            &env(&[
                ("ACCTSTATE__BINANCE__ENV", "testnet"),
                ("ACCTSTATE__BINANCE__MARKET", "usdm"),
                ("ACCTSTATE__BINANCE__REST_URL", "http://127.0.0.1:9/"),
            ]),
        )
        .unwrap();
        assert_eq!(usdm.rest_url(), "http://127.0.0.1:9");
        assert_eq!(usdm.ws_url(), "wss://fstream.binancefuture.com");
        let prod = Settings::load_from(None, &env(&[])).unwrap();
        assert!(!prod.testnet());
        assert_eq!(prod.ws_url(), "wss://ws-api.binance.com:443/ws-api/v3");
    }

    #[test]
    fn usdm_events_from_a_variable_or_a_file() {
        let s = Settings::load_from(
            None,
            &env(&[(
                "ACCTSTATE__BINANCE__USDM_EVENTS",
                "ORDER_TRADE_UPDATE/ listenKeyExpired",
            )]),
        )
        .unwrap();
        assert_eq!(
            s.binance.usdm_events,
            ["ORDER_TRADE_UPDATE", "listenKeyExpired"]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.toml");
        std::fs::write(
            &path,
            "[binance]\nusdm_events = [\"ACCOUNT_UPDATE\", \"listenKeyExpired\"]\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&path), &env(&[])).unwrap();
        assert_eq!(
            s.binance.usdm_events,
            ["ACCOUNT_UPDATE", "listenKeyExpired"]
        );
        std::fs::write(&path, "[binance]\nusdm_events = []\n").unwrap();
        let err = Settings::load_from(Some(&path), &env(&[])).unwrap_err();
        assert_eq!(err.key, "binance.usdm_events");
    }

    #[test]
    fn prefixed_and_conventional_variables() {
        let s = Settings::load_from(
            None,
            &env(&[
                ("ACCTSTATE__BINANCE__MARKET", "usdm"),
                ("ACCTSTATE__ACCOUNT_ID", "acct-7"),
                ("ACCTSTATE__POSTGRES__URL", "postgres://a@b/c"),
                ("DATABASE_URL", "postgres://x@db.example/d"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("BINANCE_API_KEY", "k"),
                ("BINANCE_API_SECRET", "s"),
                ("PORT", "9000"),
            ]),
        )
        .unwrap();
        assert_eq!(s.market(), Market::Usdm);
        assert_eq!(s.account_id, "acct-7");
        assert_eq!(s.postgres.url.expose(), "postgres://x@db.example/d");
        assert_eq!(s.http.listen, "0.0.0.0:9000");
        assert_eq!(s.rest_url(), "https://fapi.binance.com");
        assert!(s.require_credentials().is_ok());
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("x@db.example") && dbg.contains("<set>"),
            "{dbg}"
        );
    }

    #[test]
    fn pg_parts_and_ssl() {
        let s = Settings::load_from(
            None,
            &env(&[
                ("PGHOST", "monorail.proxy.rlwy.net"),
                ("PGPORT", "41234"),
                ("PGUSER", "u"),
                ("PGPASSWORD", "p@ss word"),
                ("PGDATABASE", "railway"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.postgres.url.expose(),
            "postgres://u:p%40ss%20word@monorail.proxy.rlwy.net:41234/railway?sslmode=require"
        );
        assert_eq!(
            with_required_ssl("postgres://u@ep-x.neon.tech/db?sslmode=disable"),
            "postgres://u@ep-x.neon.tech/db?sslmode=disable"
        );
        assert_eq!(
            with_required_ssl("postgres://u@x.railway.app/db?a=1"),
            "postgres://u@x.railway.app/db?a=1&sslmode=require"
        );
        assert_eq!(
            with_required_ssl("postgres://u@127.0.0.1/db"),
            "postgres://u@127.0.0.1/db"
        );
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("ACCTSTATE__ACCOUNT_ID", "has space", "account_id"),
            ("ACCTSTATE__BINANCE__MARKET", "coinm", "binance.market"),
            ("ACCTSTATE__BINANCE__ENV", "staging", "binance.env"),
            ("ACCTSTATE__BINANCE__KEY_TYPE", "dsa", "binance.key_type"),
            (
                "ACCTSTATE__BINANCE__REST_URL",
                "ftp://x",
                "binance.rest_url",
            ),
            ("ACCTSTATE__BINANCE__WS_URL", "not a url", "binance.ws_url"),
            (
                "ACCTSTATE__BINANCE__RECV_WINDOW_MS",
                "70000",
                "binance.recv_window_ms",
            ),
            (
                "ACCTSTATE__BINANCE__RECV_WINDOW_MS",
                "abc",
                "binance.recv_window_ms",
            ),
            ("DATABASE_URL", "mysql://x/y", "postgres.url"),
            (
                "ACCTSTATE__POSTGRES__MAX_CONNECTIONS",
                "0",
                "postgres.max_connections",
            ),
            (
                "ACCTSTATE__POSTGRES__MIN_CONNECTIONS",
                "50",
                "postgres.min_connections",
            ),
            ("REDIS_URL", "http://x", "redis.url"),
            ("ACCTSTATE__REDIS__PREFIX", "a b", "redis.prefix"),
            ("PORT", "notaport", "http.listen"),
            ("ACCTSTATE__HTTP__LISTEN", "localhost", "http.listen"),
            ("ACCTSTATE__LOG__FORMAT", "xml", "log.format"),
            (
                "ACCTSTATE__BINANCE__USDM_EVENTS",
                "ORDER_TRADE_UPDATE/ACCOUNT_UPDATE",
                "binance.usdm_events",
            ),
            (
                "ACCTSTATE__BINANCE__USDM_EVENTS",
                "ORDER_TRADE_UPDATE/listenKeyExpired/ORDER_UPDATE",
                "binance.usdm_events",
            ),
            (
                "ACCTSTATE__BINANCE__PONG_TIMEOUT_SECS",
                "0",
                "binance.pong_timeout_secs",
            ),
            (
                "ACCTSTATE__SHUTDOWN__DRAIN_TIMEOUT_SECS",
                "0",
                "shutdown.drain_timeout_secs",
            ),
        ];
        for (var, value, key) in cases {
            let err = Settings::load_from(None, &env(&[(var, value)]))
                .expect_err(&format!("{var}={value} must be rejected"));
            assert_eq!(err.key, key, "{var}={value}: {err}");
        }
        let s = Settings::load_from(None, &env(&[])).unwrap();
        let err = s.require_credentials().unwrap_err();
        assert!(err.key.contains("binance.api_key") && err.key.contains("binance.api_secret"));
    }

    #[test]
    fn config_file_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extra.toml");
        std::fs::write(
            &path,
            "account_id = \"fromfile\"\n[redis]\nprefix = \"p1\"\n",
        )
        .unwrap();
        let s =
            Settings::load_from(Some(&path), &env(&[("ACCTSTATE__REDIS__PREFIX", "p2")])).unwrap();
        assert_eq!(s.account_id, "fromfile");
        assert_eq!(s.redis.prefix, "p2");
        let err =
            Settings::load_from(Some(&dir.path().join("missing.toml")), &env(&[])).unwrap_err();
        assert_eq!(err.key, "--config");
    }
}
