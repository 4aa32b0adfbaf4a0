//! Framing: bytes from a stream -> frames. (Skeleton; the framing helper owns this module.)

/// Why a frame was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame longer than {max} bytes")]
    TooLong { max: usize },
    /// The radio reported a payload CRC error (the chip checked it, the bytes are garbage).
    #[error("radio payload CRC error")]
    RadioCrc,
    /// The radio reported a header error, or a packet without a CRC when one is required.
    #[error("radio header error: {0}")]
    RadioHeader(String),
}
