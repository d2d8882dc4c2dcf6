//! The accounts of a process (CONTRACT §7): the `[[accounts]]` tables of `accounts_file`, or —
//! when no file is configured — the one account of the top-level keys (a fleet of one).
//!
//! Everything is validated here, before anything connects: ids (the §2 rule, unique), markets,
//! key types, and every secret resolved (`$CREDENTIALS_DIRECTORY/{id}.api_key|api_secret` wins,
//! else exactly one of inline / `_file` / `_env`). A problem is a `ConfigError` naming the file,
//! the entry (position and id) and the key. The same function runs again on SIGHUP: an error
//! then changes nothing.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use config::{Config, File, FileFormat};
use serde::Deserialize;

use super::{ConfigError, Secret, Settings, check_url, valid_account_id};
use crate::account::Market;
use crate::binance::sign::{KeyType, Signer};

/// One account as the process runs it: credentials resolved, endpoints resolved.
/// Equality (secrets included) decides on reload whether an account is "unchanged".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    pub id: String,
    pub market: Market,
    pub api_key: Secret,
    pub api_secret: Secret,
    pub key_type: KeyType,
    pub rest_url: String,
    pub ws_url: String,
}

/// One `[[accounts]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: Option<String>,
    market: Option<String>,
    api_key: Option<Secret>,
    api_key_file: Option<String>,
    api_key_env: Option<String>,
    api_secret: Option<Secret>,
    api_secret_file: Option<String>,
    api_secret_env: Option<String>,
    key_type: Option<String>,
    /// Not in the contract: per-account endpoints, for fleets that span markets on a
    /// simulator or testnet (production needs none: each market has its default).
    rest_url: Option<String>,
    ws_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    accounts: Vec<RawAccount>,
}

impl Settings {
    /// The accounts this process runs, from the process environment.
    pub fn accounts(&self) -> Result<Vec<AccountSpec>, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        self.accounts_from(&env)
    }

    /// The accounts, with `env` as the environment (tests).
    pub fn accounts_from(
        &self,
        env: &HashMap<String, String>,
    ) -> Result<Vec<AccountSpec>, ConfigError> {
        if self.accounts_file.is_empty() {
            return Ok(vec![self.single_account()]);
        }
        let path = Path::new(&self.accounts_file);
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "accounts_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let raw: RawFile = Config::builder()
            .add_source(File::from_str(&text, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| {
                ConfigError::new(format!("accounts_file {}", path.display()), e.to_string())
            })?;
        if raw.accounts.is_empty() {
            return Err(ConfigError::new(
                format!("accounts_file {}", path.display()),
                "has no [[accounts]] table",
            ));
        }
        let creds_dir = env.get("CREDENTIALS_DIRECTORY").map(Path::new);
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(raw.accounts.len());
        for (i, a) in raw.accounts.into_iter().enumerate() {
            let spec = self.resolve(path, i + 1, a, env, creds_dir)?;
            if !seen.insert(spec.id.clone()) {
                return Err(ConfigError::new(
                    entry_key(path, i + 1, Some(&spec.id), "id"),
                    "is used by an earlier entry: ids must be unique",
                ));
            }
            out.push(spec);
        }
        Ok(out)
    }

    /// The fleet of one: `account_id` and `binance.*`.
    pub fn single_account(&self) -> AccountSpec {
        AccountSpec {
            id: self.account_id.clone(),
            market: self.market(),
            api_key: self.binance.api_key.clone(),
            api_secret: self.binance.api_secret.clone(),
            key_type: self.key_type(),
            rest_url: self.rest_url(),
            ws_url: self.ws_url(),
        }
    }

    fn resolve(
        &self,
        path: &Path,
        n: usize,
        a: RawAccount,
        env: &HashMap<String, String>,
        creds_dir: Option<&Path>,
    ) -> Result<AccountSpec, ConfigError> {
        let id = a.id.clone().unwrap_or_default();
        let key = |k: &str| entry_key(path, n, a.id.as_deref(), k);
        if !valid_account_id(&id) {
            return Err(ConfigError::new(
                key("id"),
                format!("must match [a-zA-Z0-9_-]{{1,64}}, got `{id}`"),
            ));
        }
        let market: Market = match &a.market {
            Some(m) => m
                .parse()
                .map_err(|e: String| ConfigError::new(key("market"), e))?,
            None => self.market(),
        };
        let key_type: KeyType = match &a.key_type {
            Some(t) => t
                .parse()
                .map_err(|e: String| ConfigError::new(key("key_type"), e))?,
            None => self.key_type(),
        };
        let from_dir = |name: &str| {
            creds_dir
                .and_then(|d| std::fs::read_to_string(d.join(format!("{id}.{name}"))).ok())
                .map(|v| Secret::new(v.trim()))
        };
        let api_key = match from_dir("api_key") {
            Some(s) => s,
            None => one_secret(
                &key("api_key"),
                a.api_key.clone(),
                a.api_key_file.as_deref(),
                a.api_key_env.as_deref(),
                env,
                &format!("{id}.api_key"),
            )?,
        };
        let api_secret = match from_dir("api_secret") {
            Some(s) => s,
            None => one_secret(
                &key("api_secret"),
                a.api_secret.clone(),
                a.api_secret_file.as_deref(),
                a.api_secret_env.as_deref(),
                env,
                &format!("{id}.api_secret"),
            )?,
        };
        Signer::new(key_type, api_secret.expose())
            .map_err(|e| ConfigError::new(key("api_secret"), e.to_string()))?;
        let same_market = market == self.market();
        let rest_url = match a.rest_url.as_deref() {
            Some(u) => {
                check_url(&key("rest_url"), u, &["http", "https"])?;
                u.trim_end_matches('/').to_owned()
            }
            None if same_market => self.rest_url(),
            None => super::default_rest_url(market, self.testnet()).to_owned(),
        };
        let ws_url = match a.ws_url.as_deref() {
            Some(u) => {
                check_url(&key("ws_url"), u, &["ws", "wss"])?;
                u.trim_end_matches('/').to_owned()
            }
            None if same_market => self.ws_url(),
            None => super::default_ws_url(market, self.testnet()).to_owned(),
        };
        Ok(AccountSpec {
            id,
            market,
            api_key,
            api_secret,
            key_type,
            rest_url,
            ws_url,
        })
    }
}

/// `accounts_file PATH: [[accounts]] #N (id `x`).KEY`
fn entry_key(path: &Path, n: usize, id: Option<&str>, key: &str) -> String {
    match id {
        Some(id) => format!(
            "accounts_file {}: [[accounts]] #{n} (id `{id}`).{key}",
            path.display()
        ),
        None => format!("accounts_file {}: [[accounts]] #{n}.{key}", path.display()),
    }
}

/// Exactly one of inline / file / env; the value must not be empty.
fn one_secret(
    key: &str,
    inline: Option<Secret>,
    file: Option<&str>,
    var: Option<&str>,
    env: &HashMap<String, String>,
    cred_name: &str,
) -> Result<Secret, ConfigError> {
    let given = [inline.is_some(), file.is_some(), var.is_some()]
        .into_iter()
        .filter(|g| *g)
        .count();
    if given > 1 {
        return Err(ConfigError::new(
            key,
            "set only one of the inline value, `_file` and `_env`",
        ));
    }
    let value = if let Some(s) = inline {
        s
    } else if let Some(f) = file {
        let v = std::fs::read_to_string(f).map_err(|e| {
            ConfigError::new(format!("{key}_file"), format!("cannot read {f}: {e}"))
        })?;
        Secret::new(v.trim())
    } else if let Some(name) = var {
        match env.get(name).filter(|v| !v.is_empty()) {
            Some(v) => Secret::new(v.trim()),
            None => {
                return Err(ConfigError::new(
                    format!("{key}_env"),
                    format!("the variable `{name}` is not set"),
                ));
            }
        }
    } else {
        return Err(ConfigError::new(
            key,
            format!(
                "missing: set it inline, as `_file` or `_env`, or as $CREDENTIALS_DIRECTORY/{cred_name}"
            ),
        ));
    };
    if value.is_set() {
        Ok(value)
    } else {
        Err(ConfigError::new(key, "is empty"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(file: &Path) -> Settings {
        let env: HashMap<String, String> = [(
            "ACCTSTATE__ACCOUNTS_FILE".to_owned(),
            file.display().to_string(),
        )]
        .into();
        Settings::load_from(None, &env).unwrap()
    }

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("accounts.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("acctstate-accounts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn secrets_inline_file_env_and_credentials_directory() {
        let d = tmpdir("ok");
        std::fs::write(d.join("secret-b"), "sb\n").unwrap();
        let creds = d.join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(creds.join("c.api_secret"), "from-creds").unwrap();
        let p = write(
            &d,
            &format!(
                r#"
[[accounts]]
id = "a"
api_key = "ka"
api_secret = "sa"

[[accounts]]
id = "b"
market = "usdm"
api_key_env = "KEY_B"
api_secret_file = "{}"

[[accounts]]
id = "c"
api_key = "kc"
api_secret = "overridden"
rest_url = "http://127.0.0.1:9/"
"#,
                d.join("secret-b").display()
            ),
        );
        let env: HashMap<String, String> = [
            ("KEY_B".to_owned(), "kb".to_owned()),
            (
                "CREDENTIALS_DIRECTORY".to_owned(),
                creds.display().to_string(),
            ),
        ]
        .into();
        let a = settings(&p).accounts_from(&env).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].api_secret.expose(), "sa");
        assert_eq!(a[0].rest_url, "https://api.binance.com");
        assert_eq!(a[1].market, Market::Usdm);
        assert_eq!(a[1].api_key.expose(), "kb");
        assert_eq!(a[1].api_secret.expose(), "sb");
        assert_eq!(a[1].rest_url, "https://fapi.binance.com");
        assert_eq!(a[1].ws_url, "wss://fstream.binance.com");
        assert_eq!(a[2].api_secret.expose(), "from-creds");
        assert_eq!(a[2].rest_url, "http://127.0.0.1:9");
        assert!(!format!("{a:?}").contains("sa"), "Debug shows no secret");
    }

    #[test]
    fn bad_entries_name_the_entry_and_key() {
        let d = tmpdir("bad");
        let cases = [
            (
                "[[accounts]]\nid = \"a b\"\napi_key = \"k\"\napi_secret = \"s\"\n",
                "#1 (id `a b`).id",
            ),
            (
                "[[accounts]]\nid = \"a\"\napi_key = \"k\"\napi_secret = \"s\"\n[[accounts]]\nid = \"a\"\napi_key = \"k\"\napi_secret = \"s\"\n",
                "#2 (id `a`).id",
            ),
            (
                "[[accounts]]\nid = \"a\"\napi_key = \"k\"\n",
                "#1 (id `a`).api_secret",
            ),
            (
                "[[accounts]]\nid = \"a\"\napi_key = \"k\"\napi_secret_env = \"NOPE_NOT_SET\"\n",
                "#1 (id `a`).api_secret_env",
            ),
            (
                "[[accounts]]\nid = \"a\"\napi_key = \"k\"\napi_secret = \"s\"\napi_secret_env = \"X\"\n",
                "#1 (id `a`).api_secret",
            ),
            (
                "[[accounts]]\nid = \"a\"\nmarket = \"coinm\"\napi_key = \"k\"\napi_secret = \"s\"\n",
                "#1 (id `a`).market",
            ),
            (
                "[[accounts]]\nid = \"a\"\nkey_type = \"ed25519\"\napi_key = \"k\"\napi_secret = \"s\"\n",
                "#1 (id `a`).api_secret",
            ),
        ];
        for (text, expected) in cases {
            let p = write(&d, text);
            let e = settings(&p).accounts_from(&HashMap::new()).unwrap_err();
            assert!(e.key.ends_with(expected), "{text}: got key {}", e.key);
            assert!(!e.to_string().contains("\"s\""), "no secret in {e}");
        }
        let p = write(&d, "[[accounts]]\nid = \"a\"\nsecret = \"s\"\n");
        let e = settings(&p).accounts_from(&HashMap::new()).unwrap_err();
        assert!(e.key.starts_with("accounts_file"), "{e}");
    }

    #[test]
    fn no_file_is_a_fleet_of_one() {
        let s = Settings::load_from(None, &HashMap::new()).unwrap();
        let a = s.accounts_from(&HashMap::new()).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].id, "main");
        assert_eq!(a[0].market, Market::Spot);
    }
}
