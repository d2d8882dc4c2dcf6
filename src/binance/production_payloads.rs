//! Tests: the payloads real accounts receive that the documentation's examples do not show
//! (SPEC §5a), each parsed into the right domain update or skipped as SPEC says — never counted
//! as malformed, never losing a fill.

use super::convert::{self, Frame};
use crate::account::{OrderStatus, Update};

fn usdm(text: &str) -> Frame {
    convert::parse_usdm_frame(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn spot(text: &str) -> Frame {
    convert::parse_spot_frame(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The order and fill of a frame that must carry one.
fn order_of(f: Frame) -> (crate::account::Order, Option<crate::account::Fill>) {
    match f {
        Frame::Update {
            update: Update::Order { order, fill },
            ..
        } => (order, fill),
        other => panic!("not an order update: {other:?}"),
    }
}

#[test]
fn usdm_order_without_commission_stp_price_match_or_gtd_and_a_string_er() {
    // No N/n (no commission), no V/pm/gtd, `er` as the string "0", an id above 2^53.
    let t = r#"{"e":"ORDER_TRADE_UPDATE","E":1700000000001,"T":1700000000000,"o":{"s":"BTCUSDT","c":"x1","S":"BUY","o":"LIMIT","f":"GTC","q":"0.010","p":"60000","ap":"60000","sp":"0","x":"TRADE","X":"FILLED","i":8389765739703625592,"l":"0.010","z":"0.010","L":"60000","T":1700000000000,"t":9007199254740993,"b":"0","a":"0","m":true,"R":false,"wt":"CONTRACT_PRICE","ot":"LIMIT","ps":"BOTH","cp":false,"rp":"0","er":"0"}}"#;
    let (order, fill) = order_of(usdm(t));
    assert_eq!(order.order_id, 8_389_765_739_703_625_592);
    assert_eq!(order.status, OrderStatus::Filled);
    let fill = fill.expect("the trade is a fill");
    assert_eq!(fill.trade_id, 9_007_199_254_740_993);
    assert!(fill.commission.is_zero());
}

#[test]
fn usdm_liquidation_and_adl_fills() {
    for (x, c, rp) in [
        ("NEW", "autoclose-1700000000000123", "0"),
        ("TRADE", "autoclose-1700000000000123", "-12.5"),
        ("TRADE", "adl_autoclose", "123456789012345.123456789"),
    ] {
        let t = format!(
            r#"{{"e":"ORDER_TRADE_UPDATE","E":1700000000001,"T":1700000000000,"o":{{"s":"ETHUSDT","c":"{c}","S":"SELL","o":"LIQUIDATION","f":"IOC","q":"1","p":"1900","ap":"1900","sp":"0","x":"{x}","X":"{}","i":77,"l":"{}","z":"{}","L":"1900","N":"USDT","n":"0.5","T":1700000000000,"t":{},"b":"0","a":"0","m":false,"R":true,"wt":"CONTRACT_PRICE","ot":"LIQUIDATION","ps":"BOTH","cp":false,"rp":"{rp}"}}}}"#,
            if x == "NEW" { "NEW" } else { "FILLED" },
            if x == "NEW" { "0" } else { "1" },
            if x == "NEW" { "0" } else { "1" },
            if x == "NEW" { -1 } else { 5 },
        );
        let (order, fill) = order_of(usdm(&t));
        assert_eq!(order.order_type, "LIQUIDATION");
        assert_eq!(fill.is_some(), x == "TRADE", "{t}");
        if let Some(f) = fill {
            assert_eq!(f.realized_pnl.map(|d| d.to_string()), Some(rp.to_owned()));
        }
    }
}

#[test]
fn usdm_account_update_without_bc_or_bep_with_ma_hedge_rows_and_bnfcr() {
    let t = r#"{"e":"ACCOUNT_UPDATE","E":1700000000001,"T":1700000000000,"a":{"m":"ORDER","B":[{"a":"BNFCR","wb":"12.5","cw":"12.5"},{"a":"USDT","wb":"100","cw":"90"}],"P":[{"s":"BTCUSDT","pa":"0","ep":"0","cr":"1","up":"0","mt":"cross","iw":"0","ps":"BOTH","ma":"USDT"},{"s":"BTCUSDT","pa":"0.5","ep":"60000","cr":"1","up":"3","mt":"cross","iw":"0","ps":"LONG","ma":"USDT"}]}}"#;
    let Frame::Updates { updates, .. } = usdm(t) else {
        panic!("updates")
    };
    let mut balances = 0;
    let mut positions = 0;
    for u in updates {
        match u {
            Update::Balances(b) => balances += b.len(),
            Update::Positions(p) => {
                positions += p.len();
                assert!(p.iter().any(|p| p.position_side == "LONG"));
                // No `bep`: the entry price stands in.
                assert!(p.iter().all(|p| p.breakeven_price == p.entry_price));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((balances, positions), (2, 2));
}

#[test]
fn usdm_info_events_with_fields_missing_are_info_not_malformed() {
    for t in [
        // MARGIN_CALL without `cw` (isolated).
        r#"{"e":"MARGIN_CALL","E":1700000000001,"p":[{"s":"ETHUSDT","ps":"LONG","pa":"1","mt":"ISOLATED","iw":"60","mp":"1800","up":"-10","mm":"20"}]}"#,
        // listenKeyExpired with `E` as a string.
        r#"{"e":"listenKeyExpired","E":"1736996475556","listenKey":"k"}"#,
    ] {
        let f = usdm(t);
        assert!(
            matches!(f, Frame::Info { .. } | Frame::ListenKeyExpired),
            "{f:?}"
        );
    }
}

#[test]
fn usdm_algo_update_triggering_without_ap_aq_act() {
    let t = r#"{"e":"ALGO_UPDATE","T":1700000000000,"E":1700000000001,"o":{"caid":"a1","aid":2000000000001,"at":"CONDITIONAL","o":"STOP_MARKET","s":"BTCUSDT","S":"SELL","ps":"BOTH","f":"GTC","q":"0.01","X":"TRIGGERING","tp":"59000","p":"0","wt":"MARK_PRICE","pm":"NONE","cp":false,"pP":false,"R":true,"tt":1700000000000,"gtd":0}}"#;
    let (order, fill) = order_of(usdm(t));
    assert_eq!(order.status, OrderStatus::Triggering);
    assert!(order.order_id < 0, "algo orders are keyed -algoId");
    assert!(fill.is_none());
}

#[test]
fn portfolio_margin_values_parse() {
    let t = r#"{"e":"ORDER_TRADE_UPDATE","fs":"UM","E":1700000000001,"T":1700000000000,"o":{"s":"BTCUSDT","c":"pm1","S":"BUY","o":"LIMIT","f":"GTC","q":"0.010","p":"60000","ap":"0","sp":"0","x":"NEW","X":"NEW","i":5,"l":"0","z":"0","L":"0","T":1700000000000,"t":0,"b":"600","a":"0","m":false,"R":false,"wt":"CONTRACT_PRICE","ot":"LIMIT","ps":"BOTH","cp":false,"rp":"0","V":"EXPIRE_NONE","pm":"PM_NONE","gtd":0,"er":"0"}}"#;
    let (order, fill) = order_of(usdm(t));
    assert_eq!(order.status, OrderStatus::New);
    assert!(fill.is_none());
}

#[test]
fn spot_execution_report_without_w_or_v_and_replaced() {
    for (x, status) in [("NEW", "NEW"), ("REPLACED", "NEW")] {
        let t = format!(
            r#"{{"subscriptionId":0,"event":{{"e":"executionReport","E":1700000000001,"s":"ETHBTC","c":"c1","S":"BUY","o":"LIMIT","f":"GTC","q":"1.00000000","p":"0.10264410","P":"0.00000000","F":"0.00000000","g":-1,"C":"","x":"{x}","X":"{status}","r":"NONE","i":4293153,"l":"0.00000000","z":"0.00000000","L":"0.00000000","n":"0","N":null,"T":1700000000000,"t":-1,"I":8641984,"w":true,"m":false,"M":false,"O":1700000000000,"Z":"0.00000000","Y":"0.00000000","Q":"0.00000000"}}}}"#
        );
        let (order, fill) = order_of(spot(&t));
        assert_eq!(order.order_id, 4_293_153);
        assert!(fill.is_none());
    }
}

#[test]
fn legacy_frames_are_skipped_or_unwrapped_never_malformed() {
    // outboundAccountInfo (removed 2021, still seen): skipped.
    let f =
        spot(r#"{"e":"outboundAccountInfo","E":1700000000001,"B":[{"a":"BTC","f":"1","l":"0"}]}"#);
    assert!(
        matches!(f, Frame::Info { .. } | Frame::Unknown { .. }),
        "{f:?}"
    );
    // The stream envelope, on both markets.
    let wrapped = r#"{"stream":"k","data":{"e":"outboundAccountPosition","E":1700000000001,"u":1700000000000,"B":[{"a":"BTC","f":"1.0","l":"0"}]}}"#;
    assert!(matches!(
        spot(wrapped),
        Frame::Update { .. } | Frame::Updates { .. }
    ));
    // A WS API event without `subscriptionId`.
    let bare = r#"{"event":{"e":"outboundAccountPosition","E":1700000000001,"u":1700000000000,"B":[{"a":"BTC","f":"1.0","l":"0"}]}}"#;
    assert!(matches!(
        spot(bare),
        Frame::Update { .. } | Frame::Updates { .. }
    ));
}

#[test]
fn rest_variants_parse() {
    // positionRisk v3: a zero row for a symbol with only a resting order; v2 adds fields.
    let risk = r#"[{"symbol":"ETHUSDT","positionSide":"BOTH","positionAmt":"0.000","entryPrice":"0.0","breakEvenPrice":"0.0","markPrice":"1800","unRealizedProfit":"0.00000000","liquidationPrice":"0","isolatedMargin":"0","notional":"0","marginAsset":"USDT","isolatedWallet":"0","initialMargin":"0","maintMargin":"0","positionInitialMargin":"0","openOrderInitialMargin":"10","adl":0,"bidNotional":"100","askNotional":"0","updateTime":0},
                   {"symbol":"BTCUSDT","positionSide":"BOTH","positionAmt":"0.010","entryPrice":"60000","breakEvenPrice":"60010","markPrice":"60100","unRealizedProfit":"1","liquidationPrice":"0","isolatedMargin":"0","notional":"601","marginAsset":"USDT","isolatedWallet":"0","initialMargin":"60","maintMargin":"3","positionInitialMargin":"60","openOrderInitialMargin":"0","adl":1,"bidNotional":"0","askNotional":"0","updateTime":1700000000000,"isolated":false,"adlQuantile":2}]"#;
    let positions = convert::usdm_positions(risk).expect("positionRisk");
    // The zero row is a flat position, not an open one.
    assert_eq!(positions.len(), 1, "{positions:?}");
    assert_eq!(positions[0].symbol, "BTCUSDT");
    // v2/v3 account: no tradeGroupId; an asset with zero wallet and non-zero available.
    let account = r#"{"totalWalletBalance":"0","assets":[{"asset":"BNFCR","walletBalance":"0.00000000","unrealizedProfit":"0","marginBalance":"0","maintMargin":"0","initialMargin":"0","positionInitialMargin":"0","openOrderInitialMargin":"0","crossWalletBalance":"0","crossUnPnl":"0","availableBalance":"5.5","maxWithdrawAmount":"5.5","updateTime":1700000000000}],"positions":[]}"#;
    let balances = convert::usdm_account(account).expect("account");
    assert_eq!(balances.len(), 1, "{balances:?}");
    assert_eq!(balances[0].free.to_string(), "5.5");
}
