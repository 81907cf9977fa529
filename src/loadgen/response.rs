//! Reading the server's HTTP answers on the load generator's side: framing a response out of
//! a byte buffer, and the few facts of its JSON envelope the generator needs, found by byte
//! search (a full JSON parse per answer would cost the generator more CPU than the server).

/// A complete response at the start of a buffer: its status, where its body lies, and how many
/// bytes it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framed {
    pub status: u16,
    pub body: std::ops::Range<usize>,
    pub consumed: usize,
}

/// Frames the first response in `buf`; None until it is complete. Errors for what is not
/// HTTP/1.1 with a Content-Length.
pub fn frame(buf: &[u8]) -> Result<Option<Framed>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response: {e}")),
    };
    let status = response.code.ok_or("response without a status")?;
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .ok_or("response without Content-Length")?;
    if buf.len() < head + length {
        return Ok(None);
    }
    Ok(Some(Framed { status, body: head..head + length, consumed: head + length }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(body, key)? + key.len();
    let digits: Vec<u8> = body[at..].iter().copied().take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The envelope's verdict: Ok for `"success":true`, else the error code (0 if none found).
pub fn outcome(body: &[u8]) -> Result<(), u32> {
    if body.starts_with(br#"{"success":true"#) {
        Ok(())
    } else {
        Err(number_after(body, br#""code":"#).unwrap_or(0) as u32)
    }
}

/// The exchange's order id in an order answer (`{"order":{"order_id":N,...`).
pub fn order_id(body: &[u8]) -> Option<u64> {
    number_after(body, br#""order_id":"#)
}

/// Whether the order in an order answer is still live (resting).
pub fn is_alive(body: &[u8]) -> bool {
    find(body, br#""status":"ALIVE""#).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pipelined_responses_and_reads_the_envelope() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 62\r\n\r\n{\"success\":true,\"data\":{\"order\":{\"order_id\":17,\"status\":\"ALIVE\"}}}";
        let body_len = one.len() - one.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4;
        let one = String::from_utf8_lossy(one).replace("Content-Length: 62", &format!("Content-Length: {body_len}"));
        let two = "HTTP/1.1 404 Not Found\r\ncontent-length: 74\r\n\r\n{\"success\":false,\"data\":null,\"error\":{\"code\":3001,\"message\":\"no order\"}}";
        let two = two.replace("74", &(two.len() - two.find("\r\n\r\n").unwrap() - 4).to_string());
        let buf = format!("{one}{two}").into_bytes();
        let first = frame(&buf).unwrap().unwrap();
        assert_eq!(first.status, 200);
        let body = &buf[first.body.clone()];
        assert_eq!(outcome(body), Ok(()));
        assert_eq!(order_id(body), Some(17));
        assert!(is_alive(body));
        let rest = &buf[first.consumed..];
        let second = frame(rest).unwrap().unwrap();
        assert_eq!(second.status, 404);
        assert_eq!(outcome(&rest[second.body.clone()]), Err(3001));
        assert_eq!(second.consumed, rest.len());
        assert_eq!(frame(&rest[..rest.len() - 1]).unwrap(), None, "a partial body waits");
        assert!(frame(b"garbage\r\n\r\n").is_err());
    }
}
