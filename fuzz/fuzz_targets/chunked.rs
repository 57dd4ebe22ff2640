//! The chunked decoder: never panics, never hands on more data than it was given, and gives
//! the same result however its input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidegate::http1::body::ChunkedDecoder;

fn decode(pieces: &[&[u8]]) -> Result<(usize, bool, usize), &'static str> {
    let mut decoder = ChunkedDecoder::default();
    let (mut used, mut payload) = (0, 0);
    for piece in pieces {
        let took = decoder.advance(piece, |data| payload += data.len())?;
        assert!(took <= piece.len());
        used += took;
        if took < piece.len() {
            break;
        }
    }
    Ok((used, decoder.is_done(), payload))
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let whole = decode(&[data]);
    if let Ok((used, _, payload)) = whole {
        assert!(payload <= used && used <= data.len());
    }
    let at = usize::from(split) % (data.len() + 1);
    let (first, second) = data.split_at(at);
    let pieces = decode(&[first, second]);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("split at {at}: {whole:?} vs {pieces:?}"),
    }
});
