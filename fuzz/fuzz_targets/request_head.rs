//! The HTTP/1.1 engine's request-head parser: never panics, takes only the head, and when it
//! accepts a request, writes the instance's head from it without panicking either. A head
//! parsed whole and the same bytes fed in two pieces (as reads split them) agree.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidegate::http1::request::{parse_request, write_request, Parsed};
use tidegate::http1::headers::ClientFacts;

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let mut fields = Vec::new();
    let mut buf = BytesMut::from(data);
    let whole = parse_request(&mut buf, 16 * 1024, &mut fields);
    if let Ok(Some(Parsed::Request(head))) = &whole {
        assert!(head.head.len() <= data.len());
        assert_eq!(
            head.head.len() + buf.len(),
            data.len(),
            "only the head is taken"
        );
        let host = http::HeaderValue::from_static("app.p.localhost");
        let facts = ClientFacts {
            peer: "127.0.0.1:1".parse().unwrap(),
            scheme: "http",
            host: &host,
            version: http::Version::HTTP_11,
            trusted: split % 2 == 0,
        };
        let mut out = Vec::new();
        write_request(&mut out, head, &fields, &facts);
        assert!(out.ends_with(b"\r\n\r\n"));
    }
    // Fed in two pieces: the first piece alone is incomplete or gives the same verdict.
    let at = usize::from(split) % (data.len() + 1);
    let mut first = BytesMut::from(&data[..at]);
    match parse_request(&mut first, 16 * 1024, &mut Vec::new()) {
        Ok(None) => {}
        Ok(Some(_)) => assert!(matches!(whole, Ok(Some(_)))),
        Err(_) => assert!(whole.is_err()),
    }
});
