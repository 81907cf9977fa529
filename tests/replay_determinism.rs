//! The replay tool (a real process) gives byte-identical output for the same log, reports bad
//! lines without stopping, and ends with a state dump.

use std::io::Write;
use std::process::{Command, Stdio};

fn replay(args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qaexchange-replay"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("replay tool starts");
    // Feed stdin from another thread: the tool writes while it reads, and a full stdout pipe
    // would otherwise block both sides.
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || input.write_all(&bytes));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    (output.status.code().unwrap_or(-1), output.stdout)
}

/// A longer log: many accounts trading IF and cu around a drifting price, with cancels,
/// modifies, a settlement in the middle, and closes on the next day.
fn generated_log() -> String {
    let mut seed: u64 = 0x5EED;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut lines = Vec::new();
    let mut ts: i64 = 1_735_781_400_000_000_000;
    for a in 0..20 {
        lines.push(format!(r#"{{"cmd":"open_account","ts":{ts},"account_id":"acct{a}"}}"#));
        lines.push(format!(r#"{{"cmd":"deposit","ts":{ts},"account_id":"acct{a}","amount":5000000}}"#));
    }
    for i in 0..3000 {
        ts += 1_000_000;
        let a = next(20);
        if i == 1500 {
            lines.push(format!(r#"{{"cmd":"settle","ts":{ts}}}"#));
            continue;
        }
        match next(10) {
            0 => lines.push(format!(
                r#"{{"cmd":"cancel_order","ts":{ts},"account_id":"acct{a}","client_order_id":"o{}"}}"#,
                next(i as u64 + 1)
            )),
            1 => lines.push(format!(
                r#"{{"cmd":"modify_order","ts":{ts},"account_id":"acct{a}","client_order_id":"o{}","new_price":{}}}"#,
                next(i as u64 + 1),
                3930.0 + next(30) as f64 * 0.2
            )),
            _ => {
                let (inst, price) = if next(2) == 0 {
                    ("IF2501", format!("{:.1}", 3930.0 + next(30) as f64 * 0.2))
                } else {
                    ("cu2501", format!("{}", 74300 + next(20) * 10))
                };
                let side = if next(2) == 0 { "BUY" } else { "SELL" };
                let offset = ["OPEN", "OPEN", "CLOSE", "CLOSETODAY"][next(4) as usize];
                let tc = ["GFD", "GFD", "GTC", "IOC"][next(4) as usize];
                lines.push(format!(
                    r#"{{"cmd":"insert_order","ts":{ts},"order":{{"account_id":"acct{a}","client_order_id":"o{i}","instrument_id":"{inst}","direction":"{side}","offset":"{offset}","limit_price":{price},"volume":{},"time_condition":"{tc}"}}}}"#,
                    1 + next(3)
                ));
            }
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn same_log_gives_byte_identical_output() {
    let (code_a, out_a) = replay(&["tests/data/sample_day.jsonl"], None);
    let (code_b, out_b) = replay(&["tests/data/sample_day.jsonl"], None);
    assert_eq!((code_a, code_b), (0, 0));
    assert!(!out_a.is_empty());
    assert_eq!(out_a, out_b);

    let log = generated_log();
    let (code_c, out_c) = replay(&["-"], Some(log.as_bytes()));
    let (code_d, out_d) = replay(&[], Some(log.as_bytes()));
    assert_eq!((code_c, code_d), (0, 0));
    assert_eq!(out_c, out_d, "stdin replays differ");
    let text = String::from_utf8(out_c).unwrap();
    let trades = text.lines().filter(|l| l.starts_with(r#"{"event":"trade""#)).count();
    assert!(trades > 300, "the generated log should trade a lot, got {trades}");
    assert!(text.contains(r#""event":"trading_day_advanced""#));
}

#[test]
fn sample_day_ends_with_the_expected_state() {
    let (code, out) = replay(&["tests/data/sample_day.jsonl"], None);
    assert_eq!(code, 0);
    let text = String::from_utf8(out).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let state = &last["state"];
    assert_eq!(state["trading_day"], 20250103);
    let accounts = state["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 3);
    // bob: settled at 1,001,945.697; next day closed 1 IF his lot at 3945 against the 3940
    // settlement price: +1,500 close profit, -27.2205 commission (3945 x 300 x 0.000023).
    let bob = &accounts[1]["account"];
    assert_eq!(bob["account_id"], "bob");
    assert_eq!(bob["pre_balance"], 1_001_945.697);
    assert_eq!(bob["close_profit"], 1500.0);
    assert_eq!(bob["commission"], 27.2205);
}

#[test]
fn bad_lines_are_reported_and_skipped() {
    let log = concat!(
        r#"{"cmd":"open_account","ts":1,"account_id":"u1"}"#,
        "\n",
        "this is not json\n",
        r#"{"cmd":"deposit","ts":2,"account_id":"u1","amount":"lots"}"#,
        "\n",
        r#"{"cmd":"launch_rocket","ts":3}"#,
        "\n",
        r#"{"cmd":"deposit","ts":4,"account_id":"u1","amount":100}"#,
        "\n"
    );
    let (code, out) = replay(&["-"], Some(log.as_bytes()));
    assert_eq!(code, 1, "bad lines make the exit status 1");
    let text = String::from_utf8(out).unwrap();
    let errors: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("input_error").is_some().then(|| v["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(errors, vec![2, 3, 4]);
    assert!(text.contains(r#""event":"funds_transferred","ts":4,"account_id":"u1","amount":100.0"#));
}

#[test]
fn missing_instruments_file_is_a_clear_error() {
    let (code, out) = replay(&["--instruments", "no/such/file.toml", "-"], Some(b""));
    assert_eq!(code, 2);
    assert!(out.is_empty());
}
