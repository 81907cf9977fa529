//! docs/API.md keeps up with the code: every reject code has its row in the table, every command
//! and event is named, and every command example in it is a valid command.

use qaexchange::domain::command::Command;
use qaexchange::domain::event::Event;
use qaexchange::domain::risk::RejectCode;
use std::collections::BTreeSet;

fn api_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).expect("docs/API.md is readable")
}

/// The JSON tags of an enum tagged by `tag`, as serde spells them: taken from serde's own
/// "unknown variant" message, so a new variant is checked without editing this test.
fn wire_tags<T: serde::de::DeserializeOwned>(tag: &str) -> BTreeSet<String> {
    let error = match serde_json::from_str::<T>(&format!(r#"{{"{tag}":"?"}}"#)) {
        Ok(_) => panic!("`?` decoded as a {tag}"),
        Err(error) => error.to_string(),
    };
    let expected = error.split_once("expected one of").expect("serde lists the variants").1;
    let tags: BTreeSet<String> = expected.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    assert!(tags.len() > 5, "could not read the {tag} tags from {error:?}");
    tags
}

#[test]
fn every_reject_code_has_its_row() {
    let doc = api_doc();
    for &code in RejectCode::ALL {
        let name = serde_json::to_value(code).unwrap().as_str().unwrap().to_owned();
        let row = format!("| {} | {} | {} |", code.code(), name, code.message());
        assert!(doc.contains(&row), "docs/API.md has no row starting `{row}`");
    }
}

#[test]
fn every_command_and_event_is_named() {
    let doc = api_doc();
    for tag in wire_tags::<Command>("cmd").iter().chain(&wire_tags::<Event>("event")) {
        assert!(doc.contains(&format!("`{tag}`")), "docs/API.md never names `{tag}`");
    }
}

#[test]
fn command_examples_parse_and_cover_every_command() {
    let doc = api_doc();
    let mut shown = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with(r#"{"cmd""#)) {
        let command: Command = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}\nis not a command: {e}"));
        shown.insert(command.name().to_owned());
    }
    // `Command::name` agrees with the serde tags, and each command has an example.
    assert_eq!(shown, wire_tags::<Command>("cmd"));
}

#[test]
fn event_examples_parse() {
    for line in api_doc().lines().filter(|l| l.starts_with(r#"{"event""#)) {
        if let Err(e) = serde_json::from_str::<Event>(line) {
            panic!("{line}\nis not an event: {e}");
        }
    }
}

#[test]
fn every_http_error_code_has_its_row() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap();
    for &code in qaexchange::server::http::HttpErrorCode::ALL {
        let row = format!("| {} | ", code.code());
        let line = doc.lines().find(|l| l.starts_with(&row)).unwrap_or_else(|| panic!("no row for {}", code.code()));
        assert!(line.contains(&format!("| {} |", code.status())), "{line}");
        assert!(line.contains(code.message()), "{line} should carry the message {:?}", code.message());
    }
}
