//! Replays the fuzz corpus of the frame codec (`fuzz/`, target
//! `frame_codec`) so every `cargo test` checks the seeds and any crash
//! inputs saved there.

#[test]
fn frame_codec_corpus_replays_without_panics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_corpus/frame_codec");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read seed");
        wsfault::frame::fuzz_decode(&data);
        count += 1;
    }
    assert!(count >= 10, "corpus has {count} inputs");
}
