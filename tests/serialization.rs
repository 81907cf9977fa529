//! Commands and events survive both encodings unchanged: JSON (the replay log format) and rkyv
//! (the future WAL payload, read back with validation).

use qaexchange::domain::command::Command;
use qaexchange::domain::engine::{Engine, EngineConfig};
use qaexchange::domain::event::Event;
use qaexchange::domain::instrument::parse_instruments;
use rkyv::rancor::Error;

fn sample() -> (Vec<Command>, Vec<Event>) {
    let root = env!("CARGO_MANIFEST_DIR");
    let instruments = parse_instruments(&std::fs::read_to_string(format!("{root}/config/instruments.toml")).unwrap())
        .expect("instruments parse");
    let log = std::fs::read_to_string(format!("{root}/tests/data/sample_day.jsonl")).unwrap();
    let commands: Vec<Command> = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).expect("sample commands parse"))
        .collect();
    let mut engine = Engine::new(instruments, 20250102, EngineConfig::default());
    let mut events = Vec::new();
    for c in &commands {
        engine.execute(c, &mut events);
    }
    (commands, events)
}

#[test]
fn commands_round_trip_through_json_and_rkyv() {
    let (commands, _) = sample();
    assert!(commands.len() > 20);
    for c in &commands {
        let json = serde_json::to_string(c).unwrap();
        assert_eq!(&serde_json::from_str::<Command>(&json).unwrap(), c, "JSON: {json}");
        let bytes = rkyv::to_bytes::<Error>(c).unwrap();
        let archived = rkyv::access::<rkyv::Archived<Command>, Error>(&bytes).expect("valid archive");
        let back: Command = rkyv::deserialize::<Command, Error>(archived).unwrap();
        assert_eq!(&back, c);
    }
}

#[test]
fn events_round_trip_through_json_and_rkyv() {
    let (_, events) = sample();
    let mut kinds = std::collections::BTreeSet::new();
    for e in &events {
        let json = serde_json::to_string(e).unwrap();
        kinds.insert(json.split('"').nth(3).unwrap().to_string());
        assert_eq!(&serde_json::from_str::<Event>(&json).unwrap(), e, "JSON: {json}");
        let bytes = rkyv::to_bytes::<Error>(e).unwrap();
        let archived = rkyv::access::<rkyv::Archived<Event>, Error>(&bytes).expect("valid archive");
        let back: Event = rkyv::deserialize::<Event, Error>(archived).unwrap();
        assert_eq!(&back, e);
    }
    // The sample exercises most of the event model.
    for kind in ["order_accepted", "trade", "order_cancelled", "order_modified", "settlement", "quote_updated"] {
        assert!(kinds.contains(kind), "sample has no {kind} event: {kinds:?}");
    }
}

#[test]
fn damaged_archives_are_refused() {
    let (commands, _) = sample();
    let bytes = rkyv::to_bytes::<Error>(&commands[10]).unwrap();
    // A truncated buffer never validates.
    assert!(rkyv::access::<rkyv::Archived<Command>, Error>(&bytes[..bytes.len() / 2]).is_err());
    // An enum tag outside the known variants never validates: set every byte in turn to 0xff
    // and require that at least the tag bytes are caught, and that nothing panics.
    let mut refused = 0;
    for i in 0..bytes.len() {
        let mut damaged = bytes.to_vec();
        damaged[i] = 0xff;
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&damaged);
        if rkyv::access::<rkyv::Archived<Command>, Error>(&aligned).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "no corruption was detected");
}

#[test]
fn bad_json_commands_are_errors_not_panics() {
    for line in [
        r#"{"cmd":"deposit","ts":1,"account_id":"u1"}"#,
        r#"{"cmd":"deposit","ts":1,"account_id":"u1","amount":1e300}"#,
        r#"{"cmd":"deposit","ts":1,"account_id":"this-account-id-is-far-too-long-to-fit","amount":1}"#,
        r#"{"cmd":"insert_order","ts":1,"order":{"account_id":"u1","client_order_id":"x","instrument_id":"IF2501","direction":"UP","offset":"OPEN","volume":1}}"#,
        r#"{"cmd":"insert_order","ts":1,"order":{"account_id":"u1","client_order_id":"x","instrument_id":"IF2501","direction":"BUY","offset":"OPEN","volume":1,"colour":"red"}}"#,
        r#"{"cmd":"settle","ts":"yesterday"}"#,
        r#"[1,2,3]"#,
    ] {
        assert!(serde_json::from_str::<Command>(line).is_err(), "accepted: {line}");
    }
}
