//! The paper executor's SQL, one named statement per operation, each with the locks it takes.
//! Every order transaction locks the account row first and the position row second, always
//! in that order, so two orders can never wait on each other in opposite orders (no deadlock).

/// Locks the account row for the rest of the transaction. Every order of the account takes
/// this lock first, so concurrent orders serialise here: each one reads the balance (and,
/// after the lock, the position and earlier orders) as the previous one committed them.
pub(super) const LOCK_ACCOUNT: &str = "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE";

/// Locks the position row when there is one. Under the account lock this is belt and
/// braces: it also excludes any writer that touches positions without the account lock.
pub(super) const LOCK_POSITION: &str = "SELECT quantity, avg_price, entry_filled_at, fees, cost \
     FROM positions WHERE account_id = $1 AND market = $2 FOR UPDATE";

/// The position without a lock (reports and tests).
pub(super) const POSITION: &str = "SELECT quantity, avg_price, entry_filled_at, fees, cost \
     FROM positions WHERE account_id = $1 AND market = $2";

/// The order already recorded under a client order id, with its fill if it has one. No lock:
/// it runs after `LOCK_ACCOUNT`, so an earlier order of the same account has committed.
pub(super) const FIND_ORDER: &str = "SELECT o.account_id, o.market, o.side, o.state, \
     f.price, f.quantity, f.fee, f.filled_at \
     FROM orders o LEFT JOIN fills f USING (client_order_id) WHERE o.client_order_id = $1";

/// Records an order. `ON CONFLICT DO NOTHING` is the last guard of DESIGN invariant 6: a
/// concurrent twin blocks on the unique index until the first commits, then inserts nothing
/// (no row returned) and the caller reports the earlier fill.
pub(super) const INSERT_ORDER: &str = "INSERT INTO orders (client_order_id, account_id, market, \
     side, requested_notional, requested_quantity, state, decided_at, created_at, reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (client_order_id) DO NOTHING RETURNING client_order_id";

/// One fill per order: the client order id is the primary key.
pub(super) const INSERT_FILL: &str = "INSERT INTO fills (client_order_id, price, quantity, fee, \
     filled_at) VALUES ($1, $2, $3, $4, $5)";

/// Writes the balance computed under `LOCK_ACCOUNT`; `CHECK (balance >= 0)` backs the code.
pub(super) const SET_BALANCE: &str =
    "UPDATE accounts SET balance = $2, updated_at = $3 WHERE id = $1";

/// Creates or replaces the position computed under the locks (the row lock is already held
/// when it exists; when it does not, the account lock keeps a twin insert out).
pub(super) const UPSERT_POSITION: &str = "INSERT INTO positions (account_id, market, quantity, \
     avg_price, entry_filled_at, fees, cost, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (account_id, market) DO UPDATE SET quantity = EXCLUDED.quantity, \
     avg_price = EXCLUDED.avg_price, fees = EXCLUDED.fees, cost = EXCLUDED.cost, \
     updated_at = EXCLUDED.updated_at";

/// A full sell closes the position: no row with quantity 0 ever exists.
pub(super) const DELETE_POSITION: &str =
    "DELETE FROM positions WHERE account_id = $1 AND market = $2";

/// A closed round trip (or the closed share of a partial sell), keyed by the exit's order.
pub(super) const INSERT_TRADE: &str = "INSERT INTO trades (exit_client_order_id, account_id, \
     market, entry_time, entry_price, exit_time, exit_price, quantity, entry_fee, exit_fee, \
     cost, proceeds, pnl, exit_reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// Opens an account if its name is new; no lock on an existing one.
pub(super) const OPEN_ACCOUNT: &str = "INSERT INTO accounts (name, balance, created_at, \
     updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO NOTHING RETURNING id";

/// No lock: reports and tests read the committed balance.
pub(super) const ACCOUNT_BALANCE: &str = "SELECT balance FROM accounts WHERE id = $1";

pub(super) const ACCOUNT_BY_NAME: &str = "SELECT id FROM accounts WHERE name = $1";

/// `paper reset`: sets the balance, creating the account if needed; the upsert locks the
/// row, so a reset waits for running orders and they wait for it.
pub(super) const RESET_ACCOUNT: &str = "INSERT INTO accounts (name, balance, created_at, \
     updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE \
     SET balance = EXCLUDED.balance, updated_at = EXCLUDED.updated_at RETURNING id";

/// `paper reset` closes every position without a trade (the history of orders, fills and
/// trades stays, so a retried old job still finds its fill and does nothing).
pub(super) const DELETE_POSITIONS: &str = "DELETE FROM positions WHERE account_id = $1";
