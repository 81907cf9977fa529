//! Account commands that need no book: open, deposit / withdraw, freeze. Shared by the
//! single engine and the shard engine (which runs them on the account's shard).

use crate::domain::event::Event;
use crate::domain::instrument::Instrument;
use crate::domain::ledger::account::{AccountStatus, FreezeMode};
use crate::domain::ledger::Ledger;
use crate::domain::name::AccountId;
use crate::domain::risk::RejectCode;
use crate::domain::touched::Touched;
use crate::domain::types::*;

pub fn open_account(
    ledger: &mut Ledger,
    touched: &mut Touched,
    ts: TimestampNs,
    account_id: AccountId,
    out: &mut Vec<Event>,
) -> Result<(), RejectCode> {
    let slot = ledger.open_account(account_id)?;
    out.push(Event::AccountOpened { ts, account_id });
    touched.account(slot);
    Ok(())
}

/// A deposit (`is_deposit`) or a withdrawal of `amount`, checked against the account's
/// available funds at `marks`.
#[allow(clippy::too_many_arguments)]
pub fn transfer(
    ledger: &mut Ledger,
    instruments: &[Instrument],
    marks: &[Price],
    touched: &mut Touched,
    ts: TimestampNs,
    account_id: AccountId,
    amount: Money,
    is_deposit: bool,
    out: &mut Vec<Event>,
) -> Result<(), RejectCode> {
    let slot = ledger.slot_of(&account_id).ok_or(RejectCode::AccountNotFound)?;
    // Both ledger calls refuse amounts <= 0, so a negative deposit is never a withdrawal.
    let signed = if is_deposit {
        ledger.deposit(slot, amount)?;
        amount
    } else {
        ledger.withdraw(slot, amount, instruments, marks)?;
        -amount
    };
    out.push(Event::FundsTransferred { ts, account_id, amount: signed });
    touched.account(slot);
    Ok(())
}

pub fn set_frozen(
    ledger: &mut Ledger,
    touched: &mut Touched,
    ts: TimestampNs,
    account_id: AccountId,
    frozen: bool,
    mode: FreezeMode,
    out: &mut Vec<Event>,
) -> Result<(), RejectCode> {
    let slot = ledger.slot_of(&account_id).ok_or(RejectCode::AccountNotFound)?;
    let mode = if frozen { mode } else { FreezeMode::Full };
    ledger.set_status(slot, AccountStatus::of(frozen, mode));
    out.push(Event::AccountFrozenChanged { ts, account_id, frozen, mode });
    touched.account(slot);
    Ok(())
}
