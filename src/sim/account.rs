//! The account model of the sim and its random trading-session generator: balances, orders,
//! fills, USD-M positions and conditional (algo) orders, kept consistent so that REST
//! snapshots always equal what the event stream has said. Each action returns the Binance
//! events it would push (unwrapped payloads built by `payloads`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::Value;

use super::payloads;
use super::{SimAlgoOrder, SimBalance, SimFill, SimMarket, SimOrder, SimPosition, SimState};

/// Generated sessions keep at most this many open orders.
pub(crate) const MAX_OPEN_ORDERS: usize = 50;
/// ... and at most this many open conditional orders (USD-M).
pub(crate) const MAX_OPEN_ALGOS: usize = 10;
/// Finished orders kept for `GET order` / trades (oldest pruned with their fills).
pub(crate) const MAX_FINISHED_ORDERS: usize = 20_000;

pub(crate) const USDM_LEVERAGE: i64 = 20;

#[derive(Debug, Clone)]
pub(crate) struct SymbolSpec {
    pub name: String,
    pub base: String,
    pub quote: String,
    pub price_dp: u32,
    pub qty_dp: u32,
    /// qty range in units of 10^-qty_dp
    pub qty_units: (i64, i64),
}

pub(crate) fn dec(v: i64, scale: u32) -> Decimal {
    Decimal::new(v, scale)
}

/// Spot commission rate (maker = taker), charged on the received asset.
pub(crate) fn spot_fee() -> Decimal {
    dec(1, 3)
}
pub(crate) fn usdm_maker_fee() -> Decimal {
    dec(2, 4)
}
pub(crate) fn usdm_taker_fee() -> Decimal {
    dec(4, 4)
}
pub(crate) fn maint_rate() -> Decimal {
    dec(4, 3)
}

/// Details of one execution, used to build executionReport / ORDER_TRADE_UPDATE.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    pub exec_type: &'static str,
    pub fill: Option<SimFill>,
    pub transact_time: i64,
    /// Spot cancel: (new client id for `c`, original client id for `C`).
    pub cancel_ids: Option<(String, String)>,
}

pub(crate) struct Model {
    pub market: SimMarket,
    pub st: SimState,
    pub(super) rng: StdRng,
    pub symbols: Vec<SymbolSpec>,
    pub marks: BTreeMap<String, Decimal>,
    pub(super) next_order_id: i64,
    pub(super) next_trade_id: i64,
    pub(super) next_algo_id: i64,
    pub next_exec_id: i64,
    last_event: i64,
    /// Spot: time of the last balance change (REST `updateTime`, event `u`).
    pub update_time: i64,
    /// USD-M: per-asset / per-position update times.
    pub asset_update: BTreeMap<String, i64>,
    pub pos_update: BTreeMap<String, i64>,
    pub(super) finished: VecDeque<String>,
    pub(super) order_fills: HashMap<String, Vec<String>>,
    /// Keys of the open orders placed through the REST API: the random session never fills
    /// or cancels them; they fill when the price path crosses them (`orders`).
    pub(super) api_orders: BTreeSet<String>,
    /// Keys of the open algo orders placed through the REST API (`algo`).
    pub(super) api_algos: BTreeSet<String>,
    /// Spot OCO lists by id, the keys of their untriggered stop legs, the next list id.
    pub(super) oco_lists: super::oco::OcoLists,
    pub(super) oco_pending: BTreeSet<String>,
    pub(super) next_list_id: i64,
}

fn okey(symbol: &str, id: i64) -> String {
    format!("{symbol}:{id}")
}

impl Model {
    pub fn new(market: SimMarket, seed: u64, now: i64) -> Model {
        let spec = |name: &str, base: &str, price_dp, qty_dp, qty_units| SymbolSpec {
            name: name.to_string(),
            base: base.to_string(),
            quote: "USDT".to_string(),
            price_dp,
            qty_dp,
            qty_units,
        };
        let (symbols, marks) = match market {
            SimMarket::Spot => (
                vec![
                    spec("BTCUSDT", "BTC", 2, 5, (100, 5_000)),
                    spec("ETHUSDT", "ETH", 2, 4, (100, 10_000)),
                    spec("BNBUSDT", "BNB", 2, 3, (10, 5_000)),
                ],
                [
                    ("BTCUSDT", 6_000_000),
                    ("ETHUSDT", 300_000),
                    ("BNBUSDT", 60_000),
                ],
            ),
            SimMarket::Usdm => (
                vec![
                    spec("BTCUSDT", "BTC", 1, 3, (1, 50)),
                    spec("ETHUSDT", "ETH", 2, 3, (10, 1_000)),
                    spec("BNBUSDT", "BNB", 2, 2, (1, 300)),
                ],
                [
                    ("BTCUSDT", 600_000),
                    ("ETHUSDT", 300_000),
                    ("BNBUSDT", 60_000),
                ],
            ),
        };
        let marks = marks
            .iter()
            .map(|(s, v)| {
                let dp = if market == SimMarket::Usdm && *s == "BTCUSDT" {
                    1
                } else {
                    2
                };
                (s.to_string(), dec(*v, dp))
            })
            .collect();
        let mut m = Model {
            market,
            st: SimState::default(),
            rng: StdRng::seed_from_u64(seed),
            symbols,
            marks,
            next_order_id: 1_000_001,
            next_trade_id: 5_000_001,
            next_algo_id: 9_000_001,
            next_exec_id: 1,
            last_event: 0,
            update_time: now,
            asset_update: BTreeMap::new(),
            pos_update: BTreeMap::new(),
            finished: VecDeque::new(),
            order_fills: HashMap::new(),
            api_orders: BTreeSet::new(),
            api_algos: BTreeSet::new(),
            oco_lists: BTreeMap::new(),
            oco_pending: BTreeSet::new(),
            next_list_id: 1,
        };
        match market {
            SimMarket::Spot => {
                for (a, v) in [
                    ("USDT", dec(100_000, 0)),
                    ("BTC", dec(15, 1)),
                    ("ETH", dec(20, 0)),
                    ("BNB", dec(50, 0)),
                ] {
                    m.st.balances.insert(
                        a.to_string(),
                        SimBalance {
                            free: v,
                            ..SimBalance::default()
                        },
                    );
                }
            }
            SimMarket::Usdm => {
                for (a, v) in [("USDT", dec(50_000, 0)), ("BNB", dec(10, 0))] {
                    m.st.balances.insert(
                        a.to_string(),
                        SimBalance {
                            wallet_balance: v,
                            cross_wallet_balance: v,
                            ..SimBalance::default()
                        },
                    );
                    m.asset_update.insert(a.to_string(), now);
                }
                for (s, amt, ep) in [
                    ("BTCUSDT", dec(500, 3), dec(599_000, 1)),
                    ("ETHUSDT", dec(-3, 0), dec(301_000, 2)),
                ] {
                    let mut p = flat_position(s);
                    p.amount = amt;
                    p.entry_price = ep;
                    p.breakeven_price = breakeven(amt, ep);
                    m.st.positions.insert(format!("{s}:BOTH"), p);
                    m.pos_update.insert(s.to_string(), now);
                }
            }
        }
        m.refresh(now);
        m
    }

    /// The last event time handed out.
    pub fn last_event(&self) -> i64 {
        self.last_event
    }

    /// Strictly increasing event time: max(now, last + 1).
    pub fn event_time(&mut self, now: i64) -> i64 {
        let e = now.max(self.last_event + 1);
        self.last_event = e;
        e
    }

    pub(super) fn spec(&self, symbol: &str) -> Option<&SymbolSpec> {
        self.symbols.iter().find(|s| s.name == symbol)
    }

    pub fn mark(&self, symbol: &str) -> Decimal {
        self.marks.get(symbol).copied().unwrap_or_default()
    }

    /// Recompute derived values (spot totals; USD-M unrealized PnL and available balance).
    pub fn refresh(&mut self, _now: i64) {
        match self.market {
            SimMarket::Spot => {
                for b in self.st.balances.values_mut() {
                    b.wallet_balance = b.free + b.locked;
                    b.cross_wallet_balance = b.wallet_balance;
                    b.available_balance = b.free;
                }
            }
            SimMarket::Usdm => {
                let mut upnl = Decimal::ZERO;
                let mut pos_im = Decimal::ZERO;
                for p in self.st.positions.values_mut() {
                    let mark = self.marks.get(&p.symbol).copied().unwrap_or_default();
                    p.unrealized_pnl = (p.amount * (mark - p.entry_price)).round_dp(8);
                    upnl += p.unrealized_pnl;
                    pos_im += (p.amount.abs() * mark / Decimal::from(USDM_LEVERAGE)).round_dp(8);
                }
                let ord_im = self.open_order_initial_margin();
                for (asset, b) in self.st.balances.iter_mut() {
                    b.locked = Decimal::ZERO;
                    b.available_balance = if asset == "USDT" {
                        (b.cross_wallet_balance + upnl - pos_im - ord_im).round_dp(8)
                    } else {
                        b.cross_wallet_balance
                    };
                    b.free = b.available_balance;
                }
            }
        }
    }

    pub fn open_order_initial_margin(&self) -> Decimal {
        self.st
            .open_orders
            .values()
            .map(|o| {
                ((o.orig_qty - o.executed_qty) * o.price / Decimal::from(USDM_LEVERAGE)).round_dp(8)
            })
            .sum()
    }

    /// (bid notional, ask notional) of the open orders of a symbol.
    pub fn open_notional(&self, symbol: &str) -> (Decimal, Decimal) {
        let mut bid = Decimal::ZERO;
        let mut ask = Decimal::ZERO;
        for o in self.st.open_orders.values().filter(|o| o.symbol == symbol) {
            let n = (o.orig_qty - o.executed_qty) * o.price;
            if o.side == "BUY" {
                bid += n;
            } else {
                ask += n;
            }
        }
        (bid, ask)
    }

    fn random_walk(&mut self) {
        let syms: Vec<(String, u32)> = self
            .symbols
            .iter()
            .map(|s| (s.name.clone(), s.price_dp))
            .collect();
        for (s, dp) in syms {
            let r = dec(self.rng.random_range(-10..=10), 4);
            if let Some(m) = self.marks.get_mut(&s) {
                *m = (*m * (Decimal::ONE + r)).round_dp(dp);
            }
        }
    }

    /// One random action; returns the events it produced.
    pub fn step(&mut self, now: i64) -> Vec<Value> {
        self.random_walk();
        let mut crossed = self.match_resting(now);
        crossed.extend(self.trigger_algos(now));
        let mut evs = Vec::new();
        for _ in 0..4 {
            let roll = self.rng.random_range(0..100);
            evs = match self.market {
                SimMarket::Spot => self.spot_action(roll, now),
                SimMarket::Usdm => self.usdm_action(roll, now),
            };
            if !evs.is_empty() {
                break;
            }
        }
        if evs.is_empty() {
            evs = self.deposit(now, true);
        }
        self.refresh(now);
        if crossed.is_empty() {
            evs
        } else {
            crossed.into_iter().chain(evs).collect()
        }
    }

    fn spot_action(&mut self, roll: u32, now: i64) -> Vec<Value> {
        match roll {
            0..=29 => self.place_limit(now),
            30..=49 => self.fill_random(now, false),
            50..=59 => self.fill_random(now, true),
            60..=71 => self.cancel_random(now, false),
            72..=74 => self.cancel_random(now, true),
            75..=89 => self.market_order(now),
            90..=95 => self.deposit(now, true),
            _ => self.deposit(now, false),
        }
    }

    fn usdm_action(&mut self, roll: u32, now: i64) -> Vec<Value> {
        match roll {
            0..=24 => self.place_limit(now),
            25..=41 => self.fill_random(now, false),
            42..=51 => self.fill_random(now, true),
            52..=61 => self.cancel_random(now, false),
            62..=75 => self.market_order(now),
            76..=79 => self.deposit(now, true),
            80..=82 => self.deposit(now, false),
            83..=86 => self.funding_fee(now),
            87..=91 => self.algo_place(now),
            92..=95 => self.algo_cancel(now),
            _ => self.algo_trigger(now),
        }
    }

    fn pick_symbol(&mut self) -> SymbolSpec {
        let i = self.rng.random_range(0..self.symbols.len());
        self.symbols[i].clone()
    }

    fn random_qty(&mut self, spec: &SymbolSpec) -> Decimal {
        dec(
            self.rng.random_range(spec.qty_units.0..=spec.qty_units.1),
            spec.qty_dp,
        )
    }

    pub(super) fn client_id(&mut self, prefix: &str) -> String {
        const CH: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut s = String::from(prefix);
        for _ in 0..22usize.saturating_sub(prefix.len()) {
            s.push(CH[self.rng.random_range(0..CH.len())] as char);
        }
        s
    }

    pub(super) fn new_order(
        &mut self,
        spec: &SymbolSpec,
        side: &str,
        order_type: &str,
        price: Decimal,
        qty: Decimal,
        now: i64,
    ) -> SimOrder {
        let id = self.next_order_id;
        self.next_order_id += 1;
        let client_order_id = self.client_id("sim");
        SimOrder {
            symbol: spec.name.clone(),
            order_id: id,
            client_order_id,
            side: side.to_string(),
            order_type: order_type.to_string(),
            time_in_force: "GTC".to_string(),
            status: "NEW".to_string(),
            price,
            stop_price: Decimal::ZERO,
            orig_qty: qty,
            executed_qty: Decimal::ZERO,
            cum_quote_qty: Decimal::ZERO,
            quote_order_qty: Decimal::ZERO,
            reduce_only: false,
            order_list_id: -1,
            created_at: now,
            updated_at: now,
        }
    }

    pub(super) fn balance_mut(&mut self, asset: &str) -> &mut SimBalance {
        self.st.balances.entry(asset.to_string()).or_default()
    }

    pub(super) fn free(&self, asset: &str) -> Decimal {
        self.st
            .balances
            .get(asset)
            .map(|b| b.free)
            .unwrap_or_default()
    }

    pub(super) fn usdt_available(&mut self, now: i64) -> Decimal {
        self.refresh(now);
        self.st
            .balances
            .get("USDT")
            .map(|b| b.available_balance)
            .unwrap_or_default()
    }

    /// Spot: the asset and amount an open order keeps locked for its remaining quantity.
    pub(super) fn spot_lock(&self, o: &SimOrder) -> Option<(String, Decimal)> {
        if self.oco_pending.contains(&okey(&o.symbol, o.order_id)) {
            // An untriggered OCO stop leg: its list's maker leg holds the lock.
            return None;
        }
        let spec = self.spec(&o.symbol)?;
        let rem = o.orig_qty - o.executed_qty;
        Some(if o.side == "BUY" {
            (spec.quote.clone(), rem * o.price)
        } else {
            (spec.base.clone(), rem)
        })
    }

    pub(super) fn spot_position_event(&mut self, assets: &[String], now: i64) -> Value {
        let e = self.event_time(now);
        let bals: Vec<(String, Decimal, Decimal)> = assets
            .iter()
            .map(|a| {
                let b = self.st.balances.get(a).cloned().unwrap_or_default();
                (a.clone(), b.free, b.locked)
            })
            .collect();
        payloads::spot_account_position(e, self.update_time, &bals)
    }

    pub(super) fn order_event(&mut self, o: &SimOrder, ex: &Exec, now: i64) -> Vec<Value> {
        match self.market {
            SimMarket::Spot => {
                let e = self.event_time(now);
                let i = self.next_exec_id;
                self.next_exec_id += 1;
                vec![payloads::spot_execution_report(e, i, o, ex)]
            }
            SimMarket::Usdm => {
                let mut out = Vec::new();
                if let Some(f) = &ex.fill {
                    let e = self.event_time(now);
                    out.push(payloads::usdm_trade_lite(e, o, f));
                }
                let e = self.event_time(now);
                let (bid, ask) = self.open_notional(&o.symbol);
                out.push(payloads::usdm_order_trade_update(e, o, ex, bid, ask));
                out
            }
        }
    }

    fn place_limit(&mut self, now: i64) -> Vec<Value> {
        if self.st.open_orders.len() >= MAX_OPEN_ORDERS {
            return Vec::new();
        }
        let spec = self.pick_symbol();
        let buy = self.rng.random_bool(0.5);
        let off = dec(self.rng.random_range(5..=200), 4);
        let mark = self.mark(&spec.name);
        let price = if buy {
            mark * (Decimal::ONE - off)
        } else {
            mark * (Decimal::ONE + off)
        }
        .round_dp(spec.price_dp);
        let qty = self.random_qty(&spec);
        let side = if buy { "BUY" } else { "SELL" };
        match self.market {
            SimMarket::Spot => {
                let (asset, need) = if buy {
                    (spec.quote.clone(), price * qty)
                } else {
                    (spec.base.clone(), qty)
                };
                if self.free(&asset) < need || price <= Decimal::ZERO {
                    return Vec::new();
                }
                let o = self.new_order(&spec, side, "LIMIT", price, qty, now);
                let b = self.balance_mut(&asset);
                b.free -= need;
                b.locked += need;
                self.update_time = now;
                self.insert_open(o.clone());
                let ex = Exec {
                    exec_type: "NEW",
                    fill: None,
                    transact_time: now,
                    cancel_ids: None,
                };
                let mut evs = self.order_event(&o, &ex, now);
                evs.push(self.spot_position_event(&[asset], now));
                evs
            }
            SimMarket::Usdm => {
                let im = price * qty / Decimal::from(USDM_LEVERAGE);
                if self.usdt_available(now) < im * dec(2, 0) || price <= Decimal::ZERO {
                    return Vec::new();
                }
                let o = self.new_order(&spec, side, "LIMIT", price, qty, now);
                self.insert_open(o.clone());
                let ex = Exec {
                    exec_type: "NEW",
                    fill: None,
                    transact_time: now,
                    cancel_ids: None,
                };
                self.order_event(&o, &ex, now)
            }
        }
    }

    pub(super) fn insert_open(&mut self, o: SimOrder) {
        let k = okey(&o.symbol, o.order_id);
        self.st.orders.insert(k.clone(), o.clone());
        self.st.open_orders.insert(k, o);
    }

    /// A random open order of the session's own (never one placed through the API).
    fn random_open_key(&mut self) -> Option<String> {
        let n = self.st.open_orders.len() - self.api_orders.len();
        if n == 0 {
            return None;
        }
        let i = self.rng.random_range(0..n);
        let api = &self.api_orders;
        self.st
            .open_orders
            .keys()
            .filter(|k| !api.contains(*k))
            .nth(i)
            .cloned()
    }

    pub(super) fn finish(&mut self, key: &str, o: &SimOrder) {
        self.st.open_orders.remove(key);
        self.api_orders.remove(key);
        self.st.orders.insert(key.to_string(), o.clone());
        self.finished.push_back(key.to_string());
        while self.finished.len() > MAX_FINISHED_ORDERS {
            if let Some(old) = self.finished.pop_front() {
                self.st.orders.remove(&old);
                for f in self.order_fills.remove(&old).unwrap_or_default() {
                    self.st.fills.remove(&f);
                }
            }
        }
    }

    fn fill_random(&mut self, now: i64, full: bool) -> Vec<Value> {
        let Some(key) = self.random_open_key() else {
            return Vec::new();
        };
        let Some(o) = self.st.open_orders.get(&key).cloned() else {
            return Vec::new();
        };
        let Some(spec) = self.spec(&o.symbol).cloned() else {
            return Vec::new();
        };
        let rem = o.orig_qty - o.executed_qty;
        let mut qty = rem;
        if !full {
            let pct = dec(self.rng.random_range(10..=90), 2);
            qty = (rem * pct)
                .round_dp_with_strategy(spec.qty_dp, rust_decimal::RoundingStrategy::ToZero);
            if qty <= Decimal::ZERO || qty >= rem {
                qty = rem;
            }
        }
        let price = o.price;
        self.apply_fill(&key, o, qty, price, true, now)
    }

    /// Execute `qty` of an order at `price`; returns the events.
    pub(super) fn apply_fill(
        &mut self,
        key: &str,
        mut o: SimOrder,
        qty: Decimal,
        price: Decimal,
        maker: bool,
        now: i64,
    ) -> Vec<Value> {
        let Some(spec) = self.spec(&o.symbol).cloned() else {
            return Vec::new();
        };
        let quote_qty = price * qty;
        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        let mut fill = SimFill {
            symbol: o.symbol.clone(),
            trade_id,
            order_id: o.order_id,
            side: o.side.clone(),
            price,
            qty,
            quote_qty,
            commission: Decimal::ZERO,
            commission_asset: String::new(),
            is_maker: maker,
            realized_pnl: Decimal::ZERO,
            traded_at: now,
        };
        let mut changed_assets = Vec::new();
        let on_book = self.st.open_orders.contains_key(key);
        match self.market {
            SimMarket::Spot => {
                if o.side == "BUY" {
                    let comm = (qty * spot_fee()).round_dp(8);
                    let q = self.balance_mut(&spec.quote);
                    if on_book {
                        q.locked -= o.price * qty;
                        q.free += (o.price - price) * qty;
                    } else {
                        q.free -= quote_qty;
                    }
                    self.balance_mut(&spec.base).free += qty - comm;
                    fill.commission = comm;
                    fill.commission_asset = spec.base.clone();
                } else {
                    let comm = (quote_qty * spot_fee()).round_dp(8);
                    let b = self.balance_mut(&spec.base);
                    if on_book {
                        b.locked -= qty;
                    } else {
                        b.free -= qty;
                    }
                    self.balance_mut(&spec.quote).free += quote_qty - comm;
                    fill.commission = comm;
                    fill.commission_asset = spec.quote.clone();
                }
                self.update_time = now;
                changed_assets.push(spec.base.clone());
                changed_assets.push(spec.quote.clone());
            }
            SimMarket::Usdm => {
                let rate = if maker {
                    usdm_maker_fee()
                } else {
                    usdm_taker_fee()
                };
                let comm = (quote_qty * rate).round_dp(8);
                let delta = if o.side == "BUY" { qty } else { -qty };
                let pk = format!("{}:BOTH", o.symbol);
                let mut p = self
                    .st
                    .positions
                    .get(&pk)
                    .cloned()
                    .unwrap_or_else(|| flat_position(&o.symbol));
                let realized = apply_position(&mut p, delta, price);
                p.realized_pnl += realized;
                self.st.positions.insert(pk, p);
                self.pos_update.insert(o.symbol.clone(), now);
                let b = self.balance_mut("USDT");
                b.wallet_balance += realized - comm;
                b.cross_wallet_balance += realized - comm;
                self.asset_update.insert("USDT".to_string(), now);
                fill.commission = comm;
                fill.commission_asset = "USDT".to_string();
                fill.realized_pnl = realized;
            }
        }
        o.executed_qty += qty;
        o.cum_quote_qty += quote_qty;
        o.updated_at = now;
        o.status = if o.executed_qty >= o.orig_qty {
            "FILLED"
        } else {
            "PARTIALLY_FILLED"
        }
        .to_string();
        let fk = okey(&o.symbol, trade_id);
        self.st.fills.insert(fk.clone(), fill.clone());
        self.order_fills
            .entry(key.to_string())
            .or_default()
            .push(fk);
        if o.status == "FILLED" {
            self.finish(key, &o);
        } else {
            if on_book {
                self.st.open_orders.insert(key.to_string(), o.clone());
            }
            self.st.orders.insert(key.to_string(), o.clone());
        }
        let ex = Exec {
            exec_type: "TRADE",
            fill: Some(fill),
            transact_time: now,
            cancel_ids: None,
        };
        let mut evs = self.order_event(&o, &ex, now);
        match self.market {
            SimMarket::Spot => evs.push(self.spot_position_event(&changed_assets, now)),
            SimMarket::Usdm => {
                self.refresh(now);
                evs.push(self.usdm_account_update(
                    now,
                    "ORDER",
                    &[("USDT", Decimal::ZERO)],
                    &[o.symbol.clone()],
                ));
            }
        }
        evs
    }

    pub(super) fn usdm_account_update(
        &mut self,
        now: i64,
        reason: &str,
        assets: &[(&str, Decimal)],
        symbols: &[String],
    ) -> Value {
        let e = self.event_time(now);
        let b: Vec<(String, SimBalance, Decimal)> = assets
            .iter()
            .map(|(a, bc)| {
                (
                    a.to_string(),
                    self.st.balances.get(*a).cloned().unwrap_or_default(),
                    *bc,
                )
            })
            .collect();
        let p: Option<Vec<SimPosition>> = if reason == "FUNDING_FEE" {
            None
        } else {
            Some(
                symbols
                    .iter()
                    .filter_map(|s| self.st.positions.get(&format!("{s}:BOTH")).cloned())
                    .collect(),
            )
        };
        payloads::usdm_account_update(e, now, reason, &b, p.as_deref())
    }

    fn cancel_random(&mut self, now: i64, expire: bool) -> Vec<Value> {
        let Some(key) = self.random_open_key() else {
            return Vec::new();
        };
        self.cancel_order(&key, now, expire, true)
    }

    /// Cancel (or expire) an open order; `emit` false = silent.
    pub fn cancel_order(&mut self, key: &str, now: i64, expire: bool, emit: bool) -> Vec<Value> {
        self.cancel_order_as(key, now, expire, emit, None)
    }

    /// [`Model::cancel_order`]; a Spot cancel takes `cancel_cid` as its new client id (`c`).
    pub fn cancel_order_as(
        &mut self,
        key: &str,
        now: i64,
        expire: bool,
        emit: bool,
        cancel_cid: Option<String>,
    ) -> Vec<Value> {
        let Some(mut o) = self.st.open_orders.get(key).cloned() else {
            return Vec::new();
        };
        let unlock = if self.market == SimMarket::Spot {
            self.spot_lock(&o)
        } else {
            None
        };
        if let Some((asset, amt)) = &unlock {
            let b = self.balance_mut(asset);
            b.locked -= *amt;
            b.free += *amt;
            self.update_time = now;
        }
        o.status = if expire { "EXPIRED" } else { "CANCELED" }.to_string();
        o.updated_at = now;
        self.finish(key, &o);
        if !emit {
            return Vec::new();
        }
        let cancel_ids = if expire || self.market == SimMarket::Usdm {
            None
        } else {
            let c = match cancel_cid {
                Some(c) => c,
                None => self.client_id("web_"),
            };
            Some((c, o.client_order_id.clone()))
        };
        let ex = Exec {
            exec_type: if expire { "EXPIRED" } else { "CANCELED" },
            fill: None,
            transact_time: now,
            cancel_ids,
        };
        let mut evs = self.order_event(&o, &ex, now);
        if let Some((asset, _)) = unlock {
            evs.push(self.spot_position_event(&[asset], now));
        }
        evs
    }

    fn market_order(&mut self, now: i64) -> Vec<Value> {
        let spec = self.pick_symbol();
        let buy = self.rng.random_bool(0.5);
        let qty = self.random_qty(&spec);
        let price = self.mark(&spec.name);
        if price <= Decimal::ZERO {
            return Vec::new();
        }
        match self.market {
            SimMarket::Spot => {
                let ok = if buy {
                    self.free(&spec.quote) >= price * qty
                } else {
                    self.free(&spec.base) >= qty
                };
                if !ok {
                    return Vec::new();
                }
            }
            SimMarket::Usdm => {
                if self.usdt_available(now) < price * qty / Decimal::from(USDM_LEVERAGE) * dec(2, 0)
                {
                    return Vec::new();
                }
            }
        }
        let side = if buy { "BUY" } else { "SELL" };
        let mut o = self.new_order(&spec, side, "MARKET", Decimal::ZERO, qty, now);
        let key = okey(&o.symbol, o.order_id);
        self.st.orders.insert(key.clone(), o.clone());
        let ex = Exec {
            exec_type: "NEW",
            fill: None,
            transact_time: now,
            cancel_ids: None,
        };
        let mut evs = self.order_event(&o, &ex, now);
        // Split into one or two fills at the mark price.
        let first = if self.rng.random_bool(0.3) && qty > dec(1, spec.qty_dp) {
            (qty / dec(2, 0))
                .round_dp_with_strategy(spec.qty_dp, rust_decimal::RoundingStrategy::ToZero)
        } else {
            qty
        };
        for part in [first, qty - first] {
            if part <= Decimal::ZERO {
                continue;
            }
            evs.extend(self.apply_fill(&key, o.clone(), part, price, false, now));
            if let Some(cur) = self.st.orders.get(&key) {
                o = cur.clone();
            }
        }
        evs
    }

    fn deposit(&mut self, now: i64, deposit: bool) -> Vec<Value> {
        let assets: Vec<String> = match self.market {
            SimMarket::Spot => ["USDT", "BTC", "ETH", "BNB"].map(String::from).to_vec(),
            SimMarket::Usdm => ["USDT", "USDT", "BNB"].map(String::from).to_vec(),
        };
        let asset = assets[self.rng.random_range(0..assets.len())].clone();
        let unit = match asset.as_str() {
            "USDT" => dec(self.rng.random_range(100..=500_000), 2),
            "BTC" => dec(self.rng.random_range(1..=10_000), 5),
            _ => dec(self.rng.random_range(1..=10_000), 3),
        };
        let amount = if deposit {
            unit
        } else {
            let avail = match self.market {
                SimMarket::Spot => self.free(&asset),
                SimMarket::Usdm => {
                    let a = if asset == "USDT" {
                        self.usdt_available(now)
                    } else {
                        self.st
                            .balances
                            .get(&asset)
                            .map(|b| b.wallet_balance)
                            .unwrap_or_default()
                    };
                    a.max(Decimal::ZERO) / dec(2, 0)
                }
            };
            let w = unit
                .min(avail)
                .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero);
            if w <= Decimal::ZERO {
                return Vec::new();
            }
            -w
        };
        match self.market {
            SimMarket::Spot => {
                self.balance_mut(&asset).free += amount;
                self.update_time = now;
                let e = self.event_time(now);
                let bu = payloads::spot_balance_update(e, &asset, amount, now);
                vec![bu, self.spot_position_event(&[asset], now)]
            }
            SimMarket::Usdm => {
                let b = self.balance_mut(&asset);
                b.wallet_balance += amount;
                b.cross_wallet_balance += amount;
                self.asset_update.insert(asset.clone(), now);
                self.refresh(now);
                let reason = if deposit { "DEPOSIT" } else { "WITHDRAW" };
                vec![self.usdm_account_update(now, reason, &[(asset.as_str(), amount)], &[])]
            }
        }
    }

    fn funding_fee(&mut self, now: i64) -> Vec<Value> {
        let notional: Decimal = self
            .st
            .positions
            .values()
            .map(|p| p.amount.abs() * self.mark(&p.symbol))
            .sum();
        if notional.is_zero() {
            return Vec::new();
        }
        let sign = if self.rng.random_bool(0.6) { -1 } else { 1 };
        let fee = (notional * dec(sign, 4)).round_dp(8);
        let b = self.balance_mut("USDT");
        if b.wallet_balance + fee < Decimal::ZERO {
            return Vec::new();
        }
        b.wallet_balance += fee;
        b.cross_wallet_balance += fee;
        self.asset_update.insert("USDT".to_string(), now);
        self.refresh(now);
        vec![self.usdm_account_update(now, "FUNDING_FEE", &[("USDT", fee)], &[])]
    }

    fn algo_place(&mut self, now: i64) -> Vec<Value> {
        if self.st.open_algo_orders.len() >= MAX_OPEN_ALGOS {
            return Vec::new();
        }
        let spec = self.pick_symbol();
        let buy = self.rng.random_bool(0.5);
        let tp = self.rng.random_bool(0.5);
        let mark = self.mark(&spec.name);
        let off = dec(self.rng.random_range(50..=300), 4);
        // TAKE_PROFIT: buy below / sell above; STOP: buy above / sell below.
        let above = buy != tp;
        let trig = if above {
            mark * (Decimal::ONE + off)
        } else {
            mark * (Decimal::ONE - off)
        }
        .round_dp(spec.price_dp);
        let qty = self.random_qty(&spec);
        let id = self.next_algo_id;
        self.next_algo_id += 1;
        let a = SimAlgoOrder {
            symbol: spec.name.clone(),
            algo_id: id,
            client_algo_id: self.client_id("algo"),
            side: if buy { "BUY" } else { "SELL" }.to_string(),
            order_type: if tp { "TAKE_PROFIT" } else { "STOP" }.to_string(),
            status: "NEW".to_string(),
            quantity: qty,
            trigger_price: trig,
            price: trig,
            reduce_only: false,
            created_at: now,
            updated_at: now,
        };
        self.st
            .open_algo_orders
            .insert(okey(&a.symbol, id), a.clone());
        let e = self.event_time(now);
        vec![payloads::usdm_algo_update(e, now, &a, None, 0)]
    }

    /// A random open algo order of the session's own (never one placed through the API).
    fn random_algo_key(&mut self) -> Option<String> {
        let n = self.st.open_algo_orders.len() - self.api_algos.len();
        if n == 0 {
            return None;
        }
        let i = self.rng.random_range(0..n);
        let api = &self.api_algos;
        self.st
            .open_algo_orders
            .keys()
            .filter(|k| !api.contains(*k))
            .nth(i)
            .cloned()
    }

    fn algo_cancel(&mut self, now: i64) -> Vec<Value> {
        let Some(k) = self.random_algo_key() else {
            return Vec::new();
        };
        let Some(mut a) = self.st.open_algo_orders.remove(&k) else {
            return Vec::new();
        };
        a.status = "CANCELED".to_string();
        a.updated_at = now;
        let e = self.event_time(now);
        vec![payloads::usdm_algo_update(e, now, &a, None, 0)]
    }

    fn algo_trigger(&mut self, now: i64) -> Vec<Value> {
        if self.st.open_orders.len() >= MAX_OPEN_ORDERS {
            return Vec::new();
        }
        let Some(k) = self.random_algo_key() else {
            return Vec::new();
        };
        let Some(mut a) = self.st.open_algo_orders.remove(&k) else {
            return Vec::new();
        };
        let Some(spec) = self.spec(&a.symbol).cloned() else {
            return Vec::new();
        };
        let o = self.new_order(&spec, &a.side.clone(), "LIMIT", a.price, a.quantity, now);
        a.status = "TRIGGERED".to_string();
        a.updated_at = now;
        let e = self.event_time(now);
        let mut evs = vec![payloads::usdm_algo_update(
            e,
            now,
            &a,
            Some(o.order_id),
            now,
        )];
        self.insert_open(o.clone());
        let ex = Exec {
            exec_type: "NEW",
            fill: None,
            transact_time: now,
            cancel_ids: None,
        };
        evs.extend(self.order_event(&o, &ex, now));
        evs
    }

    /// Fault: change the account without any event.
    pub fn silent_change(&mut self, now: i64) {
        match self.market {
            SimMarket::Spot => {
                self.balance_mut("USDT").free += dec(12_345, 2);
                self.update_time = now;
            }
            SimMarket::Usdm => {
                let b = self.balance_mut("USDT");
                b.wallet_balance += dec(12_345, 2);
                b.cross_wallet_balance += dec(12_345, 2);
                self.asset_update.insert("USDT".to_string(), now);
                let pk = "BTCUSDT:BOTH".to_string();
                let mut p = self
                    .st
                    .positions
                    .get(&pk)
                    .cloned()
                    .unwrap_or_else(|| flat_position("BTCUSDT"));
                let mark = self.mark("BTCUSDT");
                let r = apply_position(&mut p, dec(1, 3), mark);
                p.realized_pnl += r;
                self.st.positions.insert(pk, p);
                self.pos_update.insert("BTCUSDT".to_string(), now);
            }
        }
        let api = &self.api_orders;
        if let Some(k) = self
            .st
            .open_orders
            .keys()
            .find(|k| !api.contains(*k))
            .cloned()
        {
            self.cancel_order(&k, now, false, false);
        }
        self.refresh(now);
    }

    pub fn seed_open_orders(&mut self, n: usize, now: i64) {
        for _ in 0..n {
            let spec = self.pick_symbol();
            let buy = self.rng.random_bool(0.5);
            let mark = self.mark(&spec.name);
            let price = if buy {
                mark * dec(9, 1)
            } else {
                mark * dec(11, 1)
            }
            .round_dp(spec.price_dp);
            let qty = dec(spec.qty_units.0, spec.qty_dp);
            let o = self.new_order(
                &spec,
                if buy { "BUY" } else { "SELL" },
                "LIMIT",
                price,
                qty,
                now,
            );
            if self.market == SimMarket::Spot
                && let Some((asset, amt)) = self.spot_lock(&o)
            {
                self.balance_mut(&asset).locked += amt;
            }
            self.insert_open(o);
        }
        self.refresh(now);
    }

    pub fn seed_assets(&mut self, n: usize, now: i64) {
        let start = self.st.balances.len();
        for i in 0..n {
            let asset = format!("SIM{:05}", start + i);
            let v = dec(self.rng.random_range(1..=1_000_000), 4);
            let b = match self.market {
                SimMarket::Spot => SimBalance {
                    free: v,
                    ..SimBalance::default()
                },
                SimMarket::Usdm => SimBalance {
                    wallet_balance: v,
                    cross_wallet_balance: v,
                    ..SimBalance::default()
                },
            };
            self.st.balances.insert(asset.clone(), b);
            self.asset_update.insert(asset, now);
        }
        self.refresh(now);
    }
}

pub(crate) fn flat_position(symbol: &str) -> SimPosition {
    SimPosition {
        symbol: symbol.to_string(),
        position_side: "BOTH".to_string(),
        amount: Decimal::ZERO,
        entry_price: Decimal::ZERO,
        breakeven_price: Decimal::ZERO,
        unrealized_pnl: Decimal::ZERO,
        realized_pnl: Decimal::ZERO,
        margin_type: "cross".to_string(),
        isolated_wallet: Decimal::ZERO,
    }
}

/// Breakeven = entry adjusted by a round trip of taker fees.
pub(crate) fn breakeven(amount: Decimal, entry: Decimal) -> Decimal {
    if amount.is_zero() {
        return Decimal::ZERO;
    }
    let f = usdm_taker_fee() * dec(2, 0);
    if amount > Decimal::ZERO {
        (entry * (Decimal::ONE + f)).round_dp(8)
    } else {
        (entry * (Decimal::ONE - f)).round_dp(8)
    }
}

/// Apply a signed fill of `delta` at `price` to a one-way position; returns realized PnL.
pub(crate) fn apply_position(p: &mut SimPosition, delta: Decimal, price: Decimal) -> Decimal {
    let a = p.amount;
    let mut realized = Decimal::ZERO;
    if a.is_zero() || a.is_sign_positive() == delta.is_sign_positive() {
        let new_abs = a.abs() + delta.abs();
        p.entry_price = ((a.abs() * p.entry_price + delta.abs() * price) / new_abs).round_dp(8);
        p.amount = a + delta;
    } else {
        let close = delta.abs().min(a.abs());
        let dir = if a > Decimal::ZERO {
            Decimal::ONE
        } else {
            -Decimal::ONE
        };
        realized = (close * (price - p.entry_price) * dir).round_dp(8);
        p.amount = a + delta;
        if p.amount.is_zero() {
            p.entry_price = Decimal::ZERO;
        } else if p.amount.is_sign_positive() != a.is_sign_positive() {
            p.entry_price = price;
        }
    }
    p.breakeven_price = breakeven(p.amount, p.entry_price);
    realized
}
