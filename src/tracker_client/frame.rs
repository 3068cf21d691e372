//! Reading and writing the tracker's length-prefixed frames on async streams.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ClientError;
use titorrent_tracker::proto::{decode_body, encode_frame, ClientFrame, FrameError, ServerFrame, MAX_FRAME};

/// Reads one server frame; `None` when the tracker closed the connection
/// between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<ServerFrame>, ClientError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len).into());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(decode_body(&body)?))
}

pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &ClientFrame) -> Result<(), ClientError> {
    let bytes = encode_frame(f)?;
    w.write_all(&bytes).await?;
    Ok(())
}

/// The error for a connection the tracker closed.
pub(crate) fn closed() -> ClientError {
    ClientError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the tracker closed the connection"))
}
