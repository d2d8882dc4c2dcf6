//! The signed REST client of one account: signed GETs, API-key-only listenKey calls,
//! server-time offset (measured at start and again on `-1021`), timeouts on every call, and
//! backoff. The HTTP connection pool and the weight budget (`weight::Budget`) are shared by
//! every account of a market: each call spends its weight there first, every answer's
//! `X-MBX-USED-WEIGHT-1M` corrects it, and a 429/418 `Retry-After` stops every account.
//! Credentials errors (`-2015`, `-1022`) are reported as such, not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::convert::{self, ApiError};
use super::sign::{self, Signer};
use super::weight::{self, Budget};
use crate::account::{Market, Millis};
use crate::config::{AccountSpec, Secret, Settings};

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error(
        "Binance rejected the API key or signature ({0}); check binance.api_key / binance.api_secret and the key's permissions"
    )]
    Credentials(ApiError),
    #[error("Binance answered HTTP {status}: {error}")]
    Api { status: u16, error: ApiError },
    #[error("rate limited (HTTP {status}); retry after {retry_after_secs} s")]
    RateLimited { status: u16, retry_after_secs: u64 },
    #[error("HTTP {status}: {excerpt}")]
    Http { status: u16, excerpt: String },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Parse(String),
}

impl RestError {
    /// Binance's error code, when it sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            RestError::Credentials(e) | RestError::Api { error: e, .. } => Some(e.code),
            _ => None,
        }
    }
}

/// How many times a call is tried before its error is returned.
const ATTEMPTS: u32 = 4;
/// The longest a call waits for a rate limit before giving up.
const MAX_RETRY_AFTER: u64 = 120;

/// A REST client for one market.
#[derive(Debug)]
pub struct RestClient {
    /// The account it signs for (its log lines carry it).
    account_id: String,
    http: reqwest::Client,
    base: String,
    market: Market,
    api_key: Secret,
    signer: Signer,
    recv_window_ms: u64,
    offset_ms: AtomicI64,
    budget: Arc<Budget>,
    /// Weight this client has spent (to measure what a snapshot costs).
    spent: AtomicU64,
}

/// The HTTP client every account's REST calls share (one connection pool).
pub fn http_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(settings.binance.rest_timeout_secs))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("acctstate/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

impl RestClient {
    /// One account's client on the shared pool and budget.
    pub fn for_account(
        spec: &AccountSpec,
        settings: &Settings,
        http: reqwest::Client,
        budget: Arc<Budget>,
    ) -> anyhow::Result<RestClient> {
        Ok(RestClient {
            account_id: spec.id.clone(),
            http,
            base: spec.rest_url.clone(),
            market: spec.market,
            api_key: spec.api_key.clone(),
            signer: Signer::new(spec.key_type, spec.api_secret.expose())
                .map_err(|e| anyhow::anyhow!("api_secret of account {}: {e}", spec.id))?,
            recv_window_ms: settings.binance.recv_window_ms,
            offset_ms: AtomicI64::new(0),
            budget,
            spent: AtomicU64::new(0),
        })
    }

    /// The weight this client has spent so far.
    pub fn weight_spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    /// The weight budget this client spends from.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Reads Binance's REQUEST_WEIGHT limit from exchangeInfo `rateLimits` into the budget
    /// (best effort: the configured or default limit stays otherwise).
    pub async fn adopt_published_limit(&self) {
        let path = format!("{}/exchangeInfo", self.prefix());
        let query = match self.market {
            // The full Spot exchangeInfo is megabytes; one symbol's carries the same rateLimits.
            Market::Spot => "symbol=BTCUSDT".to_owned(),
            Market::Usdm => String::new(),
        };
        match self
            .send(Method::GET, &path, &|| query.clone(), true, false)
            .await
        {
            Ok(body) => match convert::request_weight_limit(&body) {
                Some(limit) => self.budget.adopt_published(limit),
                None => tracing::warn!(
                    market = self.market.as_str(),
                    "exchangeInfo has no REQUEST_WEIGHT per-minute limit; keeping the default"
                ),
            },
            Err(e) => {
                tracing::warn!(market = self.market.as_str(), error = %e, "could not read exchangeInfo rateLimits; keeping the default weight limit")
            }
        }
    }

    pub fn market(&self) -> Market {
        self.market
    }

    /// The account this client signs for.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    pub fn api_key(&self) -> &Secret {
        &self.api_key
    }

    /// The key that signs requests.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn recv_window_ms(&self) -> u64 {
        self.recv_window_ms
    }

    fn prefix(&self) -> &'static str {
        match self.market {
            Market::Spot => "/api/v3",
            Market::Usdm => "/fapi/v1",
        }
    }

    /// The exchange's clock as we estimate it, in ms.
    pub fn server_now(&self) -> Millis {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Measures the server-time offset (half the round trip is credited to each way).
    pub async fn sync_time(&self) -> Result<i64, RestError> {
        // Spent before the clock starts: a wait for the budget is not round-trip time.
        self.budget.spend(1, || self.server_now()).await;
        self.spent.fetch_add(1, Ordering::Relaxed);
        let before = chrono::Utc::now().timestamp_millis();
        let body = self
            .send_after(
                Method::GET,
                &format!("{}/time", self.prefix()),
                &String::new,
                false,
                false,
                true,
            )
            .await?;
        let after = chrono::Utc::now().timestamp_millis();
        let server = convert::server_time(&body).map_err(|e| RestError::Parse(e.to_string()))?;
        let offset = server - (before + after) / 2;
        self.offset_ms.store(offset, Ordering::Relaxed);
        tracing::debug!(
            offset_ms = offset,
            rtt_ms = after - before,
            "server time synced"
        );
        Ok(offset)
    }

    /// A signed GET (`USER_DATA`): `timestamp` and `recvWindow` added, query signed.
    pub async fn signed_get(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<String, RestError> {
        let mut resynced = false;
        // Signed at each attempt, after the budget's wait: the timestamp is fresh.
        let signed = || {
            let mut all: Vec<(&str, String)> = params.to_vec();
            all.push(("recvWindow", self.recv_window_ms.to_string()));
            all.push(("timestamp", self.server_now().to_string()));
            sign::signed_query(&all, &self.signer)
        };
        let has_symbol = params.iter().any(|(k, _)| *k == "symbol");
        loop {
            match self
                .send(Method::GET, path, &signed, has_symbol, true)
                .await
            {
                Err(e) if e.code() == Some(-1021) && !resynced => {
                    tracing::warn!(
                        account_id = %self.account_id,
                        "Binance says our timestamp is outside recvWindow (-1021); resyncing the clock offset"
                    );
                    self.sync_time().await?;
                    resynced = true;
                }
                other => return other,
            }
        }
    }

    /// An API-key-only call (`USER_STREAM`), e.g. the listenKey endpoints.
    pub async fn key_call(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<String, RestError> {
        let query = sign::encode_query(params);
        self.send(method, path, &|| query.clone(), false, true)
            .await
    }

    /// One call, retried on 5xx, transport errors and 429/418; each attempt first spends its
    /// weight from the budget (waiting when it is spent), then builds its query (`query`), so a
    /// signed query's timestamp is taken after the wait.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &(dyn Fn() -> String + Sync),
        has_symbol: bool,
        with_key: bool,
    ) -> Result<String, RestError> {
        self.send_after(method, path, query, has_symbol, with_key, false)
            .await
    }

    /// `send`; `spent`: the first attempt's weight was spent by the caller.
    async fn send_after(
        &self,
        method: Method,
        path: &str,
        query: &(dyn Fn() -> String + Sync),
        has_symbol: bool,
        with_key: bool,
        spent: bool,
    ) -> Result<String, RestError> {
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 0;
        let cost = weight::weight_of(&method, path, has_symbol);
        loop {
            attempt += 1;
            if attempt > 1 || !spent {
                self.budget.spend(cost, || self.server_now()).await;
                self.spent.fetch_add(u64::from(cost), Ordering::Relaxed);
            }
            let q = query();
            let url = if q.is_empty() {
                format!("{}{path}", self.base)
            } else {
                format!("{}{path}?{q}", self.base)
            };
            let mut req = self.http.request(method.clone(), &url);
            if with_key {
                req = req.header("X-MBX-APIKEY", self.api_key.expose());
            }
            let result = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if let Some(used) = resp
                        .headers()
                        .get("x-mbx-used-weight-1m")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u32>().ok())
                    {
                        self.budget.observe(used, self.server_now());
                    }
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    match resp.text().await {
                        Ok(body) => classify(status, retry_after, body),
                        Err(e) => Err(RestError::Transport(without_url(e))),
                    }
                }
                Err(e) => Err(RestError::Transport(without_url(e))),
            };
            metrics::counter!("acctstate_rest_calls_total", "path" => path.to_owned(), "ok" => if result.is_ok() { "true" } else { "false" }).increment(1);
            let wait = match &result {
                Ok(_) => return result,
                Err(RestError::RateLimited {
                    retry_after_secs,
                    status,
                }) => {
                    self.budget
                        .ban(*status, Duration::from_secs(*retry_after_secs));
                    if *retry_after_secs > MAX_RETRY_AFTER {
                        return result;
                    }
                    // The budget holds every account back until Retry-After has passed.
                    Duration::ZERO
                }
                Err(RestError::Http { status, .. }) if *status >= 500 => backoff,
                Err(RestError::Transport(_)) => backoff,
                Err(_) => return result,
            };
            if attempt >= ATTEMPTS {
                return result;
            }
            if wait.is_zero() {
                continue;
            }
            tracing::debug!(
                account_id = %self.account_id,
                path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying REST call"
            );
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The budget of `market` as `settings` configures it.
pub fn budget_for(settings: &Settings, market: Market) -> Budget {
    Budget::new(
        market,
        settings.binance.rest_weight_limit,
        settings.binance.rest_weight_share_pct,
        settings.binance.snapshot_concurrency,
    )
}

/// reqwest errors print the URL, which holds the signed query: keep only the kind of failure.
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

fn classify(
    status: StatusCode,
    retry_after: Option<u64>,
    body: String,
) -> Result<String, RestError> {
    if status.is_success() {
        return Ok(body);
    }
    let code = status.as_u16();
    if code == 429 || code == 418 {
        return Err(RestError::RateLimited {
            status: code,
            retry_after_secs: retry_after.unwrap_or(if code == 418 { 120 } else { 1 }),
        });
    }
    match convert::api_error(&body) {
        Some(e) if matches!(e.code, -2015 | -1022 | -2014 | -1002) => {
            Err(RestError::Credentials(e))
        }
        Some(e) => Err(RestError::Api {
            status: code,
            error: e,
        }),
        None => Err(RestError::Http {
            status: code,
            excerpt: body.chars().take(200).collect(),
        }),
    }
}
