//! The signed Upbit Exchange API calls the live executor makes — `POST /v1/orders`,
//! `GET /v1/order?identifier=`, `GET /v1/accounts` — and the pure parsers of their answers.
//!
//! Every request carries a fresh JWT (`jwt`), built again for each 429 retry so a nonce is
//! never reused. Parameters are sent in one fixed (alphabetical) order, so the query string
//! the `query_hash` covers is exactly the body's parameters in order.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::jwt::{self, Claims};
use super::LiveError;
use crate::market::upbit_parse::{decimal_field, parse_error};
use crate::market::{MarketError, UpbitConfig, UpbitHttp};

/// A client of the Upbit Exchange API with the account's keys.
///
/// Options: `poll_interval` [500 ms] between `GET /v1/order` polls, `max_polls` [120]
/// before an execution gives up for now (the job retries and finds the order again).
#[derive(Debug)]
pub struct UpbitClient {
    http: UpbitHttp,
    access_key: String,
    secret_key: String,
    pub poll_interval: Duration,
    pub max_polls: u32,
    pub orders: crate::paper::PaperConfig,
}

/// The env names of the keys (secrets: never in the config file).
pub const ACCESS_KEY_VAR: &str = "COINPILOT_UPBIT_ACCESS_KEY";
pub const SECRET_KEY_VAR: &str = "COINPILOT_UPBIT_SECRET_KEY";

impl UpbitClient {
    pub fn new(cfg: UpbitConfig, access_key: &str, secret_key: &str) -> Result<Self, LiveError> {
        if access_key.trim().is_empty() || secret_key.trim().is_empty() {
            return Err(LiveError::NoKeys);
        }
        Ok(UpbitClient {
            http: UpbitHttp::new(cfg)?,
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            poll_interval: Duration::from_millis(500),
            max_polls: 120,
            orders: crate::paper::PaperConfig::default(),
        })
    }

    /// The client with the keys from the environment's secrets.
    pub fn from_secrets(
        cfg: UpbitConfig,
        secrets: &crate::config::secrets::Secrets,
    ) -> Result<Self, LiveError> {
        match (secrets.get(ACCESS_KEY_VAR), secrets.get(SECRET_KEY_VAR)) {
            (Some(a), Some(s)) => UpbitClient::new(cfg, a, s),
            _ => Err(LiveError::NoKeys),
        }
    }

    /// `Bearer <jwt>` for a request with these parameters.
    fn authorization(&self, params: &[(&str, String)]) -> Result<String, MarketError> {
        let signing = |e: String| MarketError::Transport(format!("cannot sign the request: {e}"));
        let (query_hash, query_hash_alg) = if params.is_empty() {
            (None, None)
        } else {
            let q = jwt::query_string(params);
            (Some(jwt::query_hash(&q)), Some("SHA512".to_string()))
        };
        let claims = Claims {
            access_key: self.access_key.clone(),
            nonce: jwt::nonce().map_err(|e| signing(e.to_string()))?,
            query_hash,
            query_hash_alg,
        };
        let token = jwt::token(&self.secret_key, &claims).map_err(|e| signing(e.to_string()))?;
        Ok(format!("Bearer {token}"))
    }

    /// A signed request: `POST` sends `params` as the JSON body, `GET` as the query.
    async fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<String, MarketError> {
        let url = self.http.url(path);
        let body: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
            .collect();
        self.http
            .send(|| {
                let b = self.http.client().request(method.clone(), &url);
                let b = if method == reqwest::Method::POST {
                    b.json(&body)
                } else {
                    b.query(params)
                };
                Ok(b.header("authorization", self.authorization(params)?))
            })
            .await
    }

    /// `POST /v1/orders` with `params` (alphabetical) as the JSON body.
    pub async fn place_order(&self, params: &[(&str, String)]) -> Result<ExchangeOrder, LiveError> {
        let text = self
            .signed(reqwest::Method::POST, "/v1/orders", params)
            .await?;
        parse_order(&text)
    }

    /// `GET /v1/order?identifier=…`: the order placed under our client order id, if any.
    pub async fn order_by_identifier(
        &self,
        identifier: &str,
    ) -> Result<Option<ExchangeOrder>, LiveError> {
        let params = [("identifier", identifier.to_string())];
        match self
            .signed(reqwest::Method::GET, "/v1/order", &params)
            .await
        {
            Ok(text) => parse_order(&text).map(Some),
            // Only Upbit's own "no such order": a 404 for a wrong path must not read as
            // "never placed", or the caller would place it again.
            Err(MarketError::Http {
                status: 404,
                detail,
            }) if detail.starts_with("order_not_found") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /v1/accounts`: every balance of the account.
    pub async fn accounts(&self) -> Result<Vec<Balance>, LiveError> {
        let text = self
            .signed(reqwest::Method::GET, "/v1/accounts", &[])
            .await?;
        parse_accounts(&text)
    }
}

/// One trade (partial fill) of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeTrade {
    pub uuid: String,
    pub price: Decimal,
    pub volume: Decimal,
    pub funds: Decimal,
}

/// An order as the exchange reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeOrder {
    pub uuid: String,
    pub state: String,
    pub executed_volume: Decimal,
    pub paid_fee: Decimal,
    pub trades: Vec<ExchangeTrade>,
}

impl ExchangeOrder {
    /// `done` or `cancel`: nothing more will fill.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "done" | "cancel")
    }
}

#[derive(Deserialize)]
struct RawOrder<'a> {
    uuid: Option<String>,
    state: Option<String>,
    #[serde(borrow)]
    executed_volume: Option<&'a RawValue>,
    #[serde(borrow)]
    paid_fee: Option<&'a RawValue>,
    #[serde(borrow, default)]
    trades: Vec<RawTrade<'a>>,
}

#[derive(Deserialize)]
struct RawTrade<'a> {
    uuid: Option<String>,
    #[serde(borrow)]
    price: Option<&'a RawValue>,
    #[serde(borrow)]
    volume: Option<&'a RawValue>,
    #[serde(borrow)]
    funds: Option<&'a RawValue>,
}

fn payload(msg: String) -> LiveError {
    LiveError::Market(MarketError::Payload(msg))
}

/// An order body (`POST /v1/orders`, `GET /v1/order`).
pub fn parse_order(body: &str) -> Result<ExchangeOrder, LiveError> {
    if let Some(detail) = parse_error(body) {
        return Err(payload(format!(
            "error payload instead of an order: {detail}"
        )));
    }
    let o: RawOrder<'_> = serde_json::from_str(body).map_err(|e| payload(format!("order: {e}")))?;
    let trades = o
        .trades
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(ExchangeTrade {
                uuid: t
                    .uuid
                    .clone()
                    .ok_or_else(|| payload(format!("order trade {i}: `uuid` is missing")))?,
                price: decimal_field(t.price, &format!("order trade {i}: `price`"))?,
                volume: decimal_field(t.volume, &format!("order trade {i}: `volume`"))?,
                funds: decimal_field(t.funds, &format!("order trade {i}: `funds`"))?,
            })
        })
        .collect::<Result<Vec<_>, LiveError>>()?;
    Ok(ExchangeOrder {
        uuid: o
            .uuid
            .ok_or_else(|| payload("order: `uuid` is missing".into()))?,
        state: o
            .state
            .ok_or_else(|| payload("order: `state` is missing".into()))?,
        executed_volume: decimal_field(o.executed_volume, "order `executed_volume`")?,
        paid_fee: decimal_field(o.paid_fee, "order `paid_fee`")?,
        trades,
    })
}

/// One currency's holdings on the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub currency: String,
    /// Available plus locked in open orders: what the account owns.
    pub total: Decimal,
}

#[derive(Deserialize)]
struct RawBalance<'a> {
    currency: Option<String>,
    #[serde(borrow)]
    balance: Option<&'a RawValue>,
    #[serde(borrow)]
    locked: Option<&'a RawValue>,
}

/// A `/v1/accounts` body.
pub fn parse_accounts(body: &str) -> Result<Vec<Balance>, LiveError> {
    if let Some(detail) = parse_error(body) {
        return Err(payload(format!(
            "error payload instead of accounts: {detail}"
        )));
    }
    let rows: Vec<RawBalance<'_>> =
        serde_json::from_str(body).map_err(|e| payload(format!("accounts: {e}")))?;
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let currency = r
                .currency
                .clone()
                .ok_or_else(|| payload(format!("account {i}: `currency` is missing")))?;
            let balance = decimal_field(r.balance, &format!("account {i}: `balance`"))?;
            let locked = decimal_field(r.locked, &format!("account {i}: `locked`"))?;
            Ok(Balance {
                currency,
                total: balance + locked,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &str = include_str!("../../tests/data/upbit/order_info_done.json");
    const NEW: &str = include_str!("../../tests/data/upbit/order_new_wait.json");
    const ACCOUNTS: &str = include_str!("../../tests/data/upbit/accounts.json");

    #[test]
    fn recorded_orders_parse_with_their_trades() {
        let o = parse_order(DONE).unwrap();
        assert!(o.is_final());
        assert_eq!(o.executed_volume.to_string(), "1.0");
        assert_eq!(o.paid_fee.to_string(), "2140.0");
        assert_eq!(o.trades.len(), 1);
        assert_eq!(o.trades[0].funds.to_string(), "4280000.0");
        let o = parse_order(NEW).unwrap();
        assert_eq!((o.state.as_str(), o.is_final()), ("wait", false));
        assert!(o.trades.is_empty());
    }

    #[test]
    fn recorded_accounts_add_locked_to_balance() {
        let b = parse_accounts(ACCOUNTS).unwrap();
        let krw = b.iter().find(|b| b.currency == "KRW").unwrap();
        assert_eq!(krw.total.to_string(), "5000.34202336");
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn an_order_error_payload_is_named() {
        let e = parse_order(r#"{"error":{"name":"insufficient_funds_bid","message":"잔고 부족"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("insufficient_funds_bid"), "{e}");
    }
}
