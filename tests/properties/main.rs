//! Property tests, bounded in cases: a fuzz corpus for every decoder, the configuration parser and the
//! topic rules, and the command encoders as the inverses of the decoders. One test binary; one module
//! per subject.

mod config;
mod decoders;
mod encoders;
