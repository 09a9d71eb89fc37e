use std::io::Read;

use http::{HeaderMap, HeaderValue};

use super::*;

fn spec(encodings: &[Encoding], default: Option<Encoding>) -> Spec {
    let excluded = vec!["application/grpc".into()];
    Spec { encodings: encodings.to_vec(), default, min_bytes: 1024, excluded, included: vec![] }
}

fn accept(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn the_encoding_is_chosen_as_traefik_chooses_it() {
    use Encoding::*;
    let s = spec(&[Gzip, Br, Zstd], None);
    let pick = |v: &[&str]| choose(&s, &accept(v)).map(|(e, _)| e);
    assert_eq!(pick(&["gzip, br, zstd"]), Some(Gzip), "ties go to the configured order");
    assert_eq!(pick(&["br;q=1.0, zstd;q=1.0, gzip;q=1.0"]), Some(Gzip));
    assert_eq!(pick(&["br;q=0.8, identity;q=0.8"]), Some(Br));
    assert_eq!(pick(&["br;q=0.8, identity;q=1.0"]), None);
    assert_eq!(pick(&["compress;q=1.0, *;q=0"]), None);
    assert_eq!(pick(&["gzip, *;q=0"]), Some(Gzip));
    assert_eq!(pick(&["zstd;q=0.9", "br"]), Some(Br), "several header lines are one list");
    assert_eq!(pick(&[""]), None);
    assert_eq!(choose(&s, &accept(&["*"])), Some((Gzip, true)), "through *: Traefik then compresses nothing");
    assert_eq!(choose(&s, &HeaderMap::new()), None);
    assert_eq!(choose(&spec(&[Br, Gzip], Some(Br)), &HeaderMap::new()), Some((Br, true)));
}

/// `chunks` through the compressor, then decompressed again.
async fn round_trip(encoding: Encoding, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
    let frames = chunks.iter().map(|c| Frame::data(Bytes::copy_from_slice(c))).collect();
    let body = ProxyBody::wrap(Replay { frames, rest: None });
    let mut c = Compressed {
        prefix: Some(Bytes::new()),
        body: Some(body),
        encoder: Some(Encoder::new(encoding)),
        trailers: None,
    };
    let mut wire = Vec::new();
    let mut frames = 0;
    while let Some(frame) = c.frame().await {
        wire.extend_from_slice(&frame.unwrap().into_data().unwrap());
        frames += 1;
    }
    let mut plain = Vec::new();
    match encoding {
        Encoding::Gzip => drop(flate2::read::GzDecoder::new(&wire[..]).read_to_end(&mut plain).unwrap()),
        Encoding::Br => drop(brotli::Decompressor::new(&wire[..], 4096).read_to_end(&mut plain).unwrap()),
        Encoding::Zstd => plain = zstd::decode_all(&wire[..]).unwrap(),
    }
    (plain, frames)
}

#[tokio::test]
async fn every_encoding_streams_frame_by_frame_and_round_trips() {
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(200);
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(1000).collect();
    for encoding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
        let (plain, frames) = round_trip(encoding, &chunks).await;
        assert_eq!(plain, text.as_bytes(), "{encoding:?}");
        assert!(frames >= chunks.len(), "{encoding:?}: {frames} frames for {} chunks: held back", chunks.len());
    }
}
