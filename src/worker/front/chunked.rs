//! The `Transfer-Encoding: chunked` request-body decoder: a byte-at-a-time
//! state machine over the framing (size lines, the CRLF after each chunk,
//! trailers), so that it streams — chunk data never passes through it, the
//! body reader copies it straight to the app — and never buffers. Every
//! line is bounded. Strict where lenient parsers have been smuggled
//! through: a size line ends in CRLF (a bare LF is refused, also inside an
//! extension), control bytes are refused, at most 16 hex digits.

/// Longest chunk-size line, extensions included.
pub(super) const CHUNK_LINE_MAX: usize = 4096;
/// Most bytes of trailer fields after the last chunk (they are discarded).
pub(super) const TRAILERS_MAX: usize = 8192;

/// Why a chunked body is refused (the connection answers 400 and closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkError {
    Syntax(&'static str),
    LineTooLong,
    TrailersTooLarge,
}

impl ChunkError {
    pub(super) fn why(self) -> &'static str {
        match self {
            ChunkError::Syntax(why) => why,
            ChunkError::LineTooLong => "chunk-size line too long",
            ChunkError::TrailersTooLarge => "chunked trailers too large",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In a size line: the value so far, its digit count, whether
    /// whitespace ended the digits, whether an extension started.
    Size {
        value: u64,
        digits: u8,
        space: bool,
        ext: bool,
    },
    SizeLf {
        value: u64,
    },
    /// Inside chunk data: bytes left.
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

const SIZE_START: State = State::Size { value: 0, digits: 0, space: false, ext: false };

/// The decoder. Feed it framing bytes with [`Chunked::feed`]; while
/// [`Chunked::data_left`] is non-zero the next bytes are chunk data, to be
/// reported with [`Chunked::took_data`].
#[derive(Clone, Debug)]
pub(super) struct Chunked {
    state: State,
    /// Bytes of the current size line, or of all trailers.
    count: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked { state: SIZE_START, count: 0 }
    }
}

impl Chunked {
    /// The last chunk and the trailers have been read.
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Chunk data bytes that come next before any framing.
    pub(super) fn data_left(&self) -> u64 {
        match self.state {
            State::Data(n) => n,
            _ => 0,
        }
    }

    /// `n` bytes of chunk data (at most [`Chunked::data_left`]) were taken.
    pub(super) fn took_data(&mut self, n: u64) {
        if let State::Data(left) = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 { State::DataCr } else { State::Data(left) };
        }
    }

    /// Consumes framing bytes from the start of `input` until chunk data
    /// starts, the body ends, or the input runs out; returns how many
    /// bytes it consumed.
    pub(super) fn feed(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        for (i, &b) in input.iter().enumerate() {
            if matches!(self.state, State::Data(_) | State::Done) {
                return Ok(i);
            }
            self.step(b)?;
        }
        Ok(input.len())
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { value, digits, space, ext } => {
                self.count += 1;
                if self.count > CHUNK_LINE_MAX {
                    return Err(ChunkError::LineTooLong);
                }
                size_byte(b, value, digits, space, ext)?
            }
            State::SizeLf { value } => match b {
                b'\n' if value == 0 => {
                    self.count = 0;
                    State::TrailerStart
                }
                b'\n' => State::Data(value),
                _ => return Err(ChunkError::Syntax("chunk-size line: CR without LF")),
            },
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataCr => return Err(ChunkError::Syntax("chunk data longer than its size")),
            State::DataLf if b == b'\n' => {
                self.count = 0;
                SIZE_START
            }
            State::DataLf => return Err(ChunkError::Syntax("chunk data: CR without LF")),
            State::TrailerStart | State::TrailerLine | State::TrailerLf => self.trailer_byte(b)?,
            State::EndLf if b == b'\n' => State::Done,
            State::EndLf => return Err(ChunkError::Syntax("chunked body: CR without LF at the end")),
            State::Data(_) | State::Done => self.state,
        };
        Ok(())
    }

    fn trailer_byte(&mut self, b: u8) -> Result<State, ChunkError> {
        self.count += 1;
        if self.count > TRAILERS_MAX {
            return Err(ChunkError::TrailersTooLarge);
        }
        Ok(match (self.state, b) {
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::TrailerLf, _) => return Err(ChunkError::Syntax("trailer: CR without LF")),
            (_, b'\r') => State::TrailerLf,
            (_, b) if b == b'\t' || (b >= b' ' && b != 0x7f) => State::TrailerLine,
            _ => return Err(ChunkError::Syntax("trailer: control byte or bare LF")),
        })
    }
}

/// One byte of a size line: `1*HEXDIG [BWS] [";" ext...] CRLF`.
fn size_byte(b: u8, value: u64, digits: u8, space: bool, ext: bool) -> Result<State, ChunkError> {
    if ext {
        return match b {
            b'\r' => Ok(State::SizeLf { value }),
            b'\t' => Ok(State::Size { value, digits, space, ext }),
            b if b >= b' ' && b != 0x7f => Ok(State::Size { value, digits, space, ext }),
            _ => Err(ChunkError::Syntax("chunk extension: control byte or bare LF")),
        };
    }
    match b {
        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if !space => {
            if digits >= 16 {
                return Err(ChunkError::Syntax("chunk size over 16 hex digits"));
            }
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => b - b'A' + 10,
            };
            Ok(State::Size { value: (value << 4) | u64::from(d), digits: digits + 1, space, ext })
        }
        _ if digits == 0 => Err(ChunkError::Syntax("chunk-size line without a size")),
        b' ' | b'\t' => Ok(State::Size { value, digits, space: true, ext }),
        b';' => Ok(State::Size { value, digits, space, ext: true }),
        b'\r' => Ok(State::SizeLf { value }),
        _ => Err(ChunkError::Syntax("invalid byte in chunk-size line")),
    }
}

#[cfg(test)]
mod tests;
