//! `paper …`: operations on the paper trading account (SPEC B6).

use clap::Subcommand;
use rust_decimal::Decimal;

use super::run::connect_and_migrate;
use super::{print_json, CliError};
use crate::clock::{Clock, SystemClock};
use crate::domain::money::Krw;
use crate::paper::{self, job::DEFAULT_ACCOUNT};

#[derive(Debug, Subcommand)]
pub enum PaperCommand {
    /// Set the account's balance and close its positions without trades; the history of
    /// orders, fills and trades stays, so an old job retried later still fills nothing.
    Reset {
        /// The new KRW balance.
        #[arg(long, default_value = "1000000")]
        balance: Decimal,
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
}

pub async fn run_paper(cmd: PaperCommand, json: bool) -> Result<(), CliError> {
    let PaperCommand::Reset { balance, account } = cmd;
    if balance.is_sign_negative() {
        return Err(CliError::BadInput(format!(
            "--balance must not be negative, got {balance}"
        )));
    }
    let pool = connect_and_migrate(2).await?;
    let mut tx = pool.begin().await?;
    let now = SystemClock.now();
    let id = paper::reset_account(&mut tx, &account, Krw::new(balance), now)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    tx.commit().await?;
    pool.close().await;
    if json {
        print_json(&serde_json::json!({ "account": account, "id": id, "balance": balance }))
    } else {
        println!("paper account `{account}` reset to {balance} KRW, no open positions");
        Ok(())
    }
}
