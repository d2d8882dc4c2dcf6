//! Realistic user-data frames for the in-process benches (`parse_apply`, `hotpath`): every one
//! distinct (a new order id / trade id / amount each time), so nothing is dropped as a duplicate.
#![allow(dead_code)]

/// Frames per generator.
pub const N: usize = 10_000;

pub fn spot_execution_reports() -> Vec<String> {
    (0..N)
        .map(|i| {
            let id = 1_000_000 + i as i64;
            let t = 1_700_000_000_000i64 + i as i64;
            // NEW then TRADE (filled) for every order: two events per order.
            let (x, st, z, trade) = if i % 2 == 0 { ("NEW", "NEW", "0.00000000", -1) } else { ("TRADE", "FILLED", "1.00000000", id) };
            let oid = id - (i as i64 % 2);
            format!(
                r#"{{"subscriptionId":0,"event":{{"e":"executionReport","E":{t},"s":"ETHBTC","c":"c{oid}","S":"BUY","o":"LIMIT","f":"GTC","q":"1.00000000","p":"0.10264410","P":"0.00000000","F":"0.00000000","g":-1,"C":"","x":"{x}","X":"{st}","r":"NONE","i":{oid},"l":"{z}","z":"{z}","L":"0.10264410","n":"0.00010000","N":"BNB","T":{t},"t":{trade},"I":{id},"w":true,"m":false,"M":false,"O":{t},"Z":"0.10264410","Y":"0.10264410","Q":"0.00000000","W":{t},"V":"NONE"}}}}"#
            )
        })
        .collect()
}

pub fn spot_account_positions() -> Vec<String> {
    (0..N)
        .map(|i| {
            let t = 1_700_000_000_000i64 + i as i64;
            format!(
                r#"{{"subscriptionId":0,"event":{{"e":"outboundAccountPosition","E":{t},"u":{t},"B":[{{"a":"ETH","f":"{}.000000","l":"0.000000"}},{{"a":"BTC","f":"1.{i:06}","l":"0.500000"}}]}}}}"#,
                10_000 + i
            )
        })
        .collect()
}

pub fn usdm_order_trade_updates() -> Vec<String> {
    (0..N)
        .map(|i| {
            let id = 8_000_000 + i as i64;
            let t = 1_700_000_000_000i64 + i as i64;
            let (x, st, z, trade) = if i % 2 == 0 { ("NEW", "NEW", "0", 0) } else { ("TRADE", "FILLED", "0.001", id) };
            let oid = id - (i as i64 % 2);
            format!(
                r#"{{"e":"ORDER_TRADE_UPDATE","E":{t},"T":{t},"o":{{"s":"BTCUSDT","c":"c{oid}","S":"SELL","o":"LIMIT","f":"GTC","q":"0.001","p":"7103.04","ap":"7103.04","sp":"0","x":"{x}","X":"{st}","i":{oid},"l":"{z}","z":"{z}","L":"7103.04","N":"USDT","n":"0.0028","T":{t},"t":{trade},"b":"0","a":"9.91","m":false,"R":false,"wt":"CONTRACT_PRICE","ot":"LIMIT","ps":"BOTH","cp":false,"pP":false,"si":0,"ss":0,"rp":"0","V":"EXPIRE_TAKER","pm":"NONE","gtd":0,"er":"0"}}}}"#
            )
        })
        .collect()
}

pub fn usdm_account_updates() -> Vec<String> {
    (0..N)
        .map(|i| {
            let t = 1_700_000_000_000i64 + i as i64;
            format!(
                r#"{{"e":"ACCOUNT_UPDATE","E":{t},"T":{t},"a":{{"m":"ORDER","B":[{{"a":"USDT","wb":"{}.12345678","cw":"100.12345678","bc":"0"}}],"P":[{{"s":"BTCUSDT","pa":"0.{i:04}","ep":"6563.66500","bep":"6563.7","cr":"0","up":"2.5","mt":"cross","iw":"0","ps":"BOTH"}}]}}}}"#,
                120_000 + i
            )
        })
        .collect()
}

/// A Spot trading session as production sends it: per order, `executionReport` NEW, the
/// `outboundAccountPosition` that locks the funds, the `executionReport` TRADE that fills it and
/// the position that settles it — `4 * n` frames.
pub fn spot_session(n: usize) -> Vec<String> {
    let reports = spot_execution_reports();
    let positions = spot_account_positions();
    (0..n)
        .flat_map(|i| {
            let k = (2 * i) % N;
            [
                reports[k].clone(),
                positions[k].clone(),
                reports[k + 1].clone(),
                positions[k + 1].clone(),
            ]
        })
        .collect()
}
