//! Entry points for the fuzz targets in `fuzz/`, compiled only by `cargo fuzz` (which sets
//! `--cfg fuzzing`). Each runs one parser of the plain path over arbitrary bytes and asserts
//! what must hold for every input, not only that nothing panics.
use crate::wire::{self, Chunked, Seen};

/// The request-head parser: a head it takes for the plain path is rewritten into exactly one
/// complete head for the instance (nothing after it that could be read as a second request),
/// with the same method and target, and the Host it reports lies inside the head.
pub fn request_head(data: &[u8]) {
    let mut out = Vec::new();
    let wire::Request::Plain(plain) = wire::request(data, &mut out, "192.0.2.1", false) else {
        return;
    };
    assert!(plain.head_len <= data.len());
    assert!(plain.host.start < plain.host.end && plain.host.end <= plain.head_len);
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut sent = httparse::Request::new(&mut fields);
    match sent.parse(&out) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "bytes after the head"),
        other => panic!("the instance's head does not parse: {other:?}"),
    }
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut got = httparse::Request::new(&mut fields);
    assert!(got.parse(data).is_ok());
    assert_eq!(sent.method, got.method);
    assert_eq!(sent.path, got.path);
    assert_eq!(sent.version, Some(1));
    let line = format!("{} {}", got.method.unwrap(), got.path.unwrap());
    assert_eq!(&out[plain.line], line.as_bytes());
}

/// The chunked-body follower: however the bytes are split into reads, it finds the same end,
/// the same error and the same content, and never reports more content than it was given.
pub fn chunked(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let whole = follow(data, data.len().max(1));
    let pieces = follow(data, usize::from(split).max(1));
    let bytes = follow(data, 1);
    assert_eq!(whole, pieces);
    assert_eq!(whole, bytes);
    if let (used, Some(_), content) = &whole {
        assert!(*used <= data.len() && content.len() <= *used);
    }
}

/// (bytes of the body, whether it ended (`None`: malformed, and then no count of bytes), its
/// content), fed `step` bytes at a time.
fn follow(data: &[u8], step: usize) -> (usize, Option<bool>, Vec<u8>) {
    let mut chunked = Chunked::default();
    let mut content = Vec::new();
    let mut used = 0;
    for piece in data.chunks(step) {
        let result = chunked.scan(piece, |seen| {
            if let Seen::Data(d) = seen {
                content.extend_from_slice(d);
            }
            false
        });
        match result {
            Ok(n) => {
                used += n;
                if chunked.is_done() {
                    return (used, Some(true), content);
                }
                assert_eq!(n, piece.len(), "stopped early without ending");
            }
            Err(wire::BadChunk) => return (0, None, content),
        }
    }
    (used, Some(false), content)
}
