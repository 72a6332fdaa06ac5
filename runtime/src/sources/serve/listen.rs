//! Listening sockets: a Unix socket only its owner can use, or TCP (loopback without a
//! token, anything else only with one).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ServeError;
use crate::sources::wire::Endpoint;

/// A bound listener.
pub(super) enum Listener {
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
        /// The socket file's (device, inode), so exit removes only our own socket.
        identity: (u64, u64),
    },
    Tcp(tokio::net::TcpListener),
}

/// An accepted connection.
pub(super) enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Listener {
    /// Binds `endpoint`; TCP beyond loopback only when the server has a token.
    pub(super) fn bind(endpoint: &Endpoint, has_token: bool) -> Result<Listener, ServeError> {
        match endpoint {
            Endpoint::Unix(path) => bind_unix(endpoint, path),
            Endpoint::Tcp(_) => {
                // Resolve once: the addresses checked are the addresses bound.
                let addresses = endpoint.resolve()?;
                if !crate::sources::wire::all_loopback(&addresses) && !has_token {
                    return Err(ServeError::TokenRequired {
                        endpoint: endpoint.clone(),
                    });
                }
                let listener = std::net::TcpListener::bind(&addresses[..])
                    .and_then(|listener| {
                        listener.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(listener)
                    })
                    .map_err(|source| ServeError::Bind {
                        endpoint: endpoint.clone(),
                        source,
                    })?;
                Ok(Listener::Tcp(listener))
            }
        }
    }

    /// The endpoint as bound (a TCP port 0 shows the port chosen).
    pub(super) fn describe(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix:{} (owner only)", path.display()),
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(address) => format!("tcp:{address}"),
                Err(_) => "tcp:?".to_owned(),
            },
        }
    }

    /// Removes the socket file if it is still ours; the listener closes when dropped.
    pub(super) fn close(&self) {
        if let Listener::Unix { path, identity, .. } = self
            && std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *identity)
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Waits for the next connection.
    pub(super) async fn accept(&self) -> std::io::Result<(Stream, String)> {
        match self {
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), "unix socket".to_owned()))
            }
            Listener::Tcp(listener) => {
                let (stream, address) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), address.to_string()))
            }
        }
    }
}

/// The next connection on any of `listeners` (never, when there are none).
pub(super) async fn accept_any(listeners: &[Listener]) -> std::io::Result<(Stream, String)> {
    let mut accepts: Vec<_> = listeners
        .iter()
        .map(|listener| Box::pin(listener.accept()))
        .collect();
    std::future::poll_fn(move |cx| {
        for accept in &mut accepts {
            if let std::task::Poll::Ready(result) = accept.as_mut().poll(cx) {
                return std::task::Poll::Ready(result);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Binds a Unix socket only its owner can use.
///
/// The folder must be safe: a real directory owned by this user (or root), and not writable
/// by others unless sticky (like `/tmp`), so nobody else can swap the socket. A missing folder
/// is created `0700` and then checked like any other (it may have been created meanwhile). A
/// socket file nobody listens on is replaced; a live one, or anything that is not a socket,
/// is an error.
fn bind_unix(endpoint: &Endpoint, path: &Path) -> Result<Listener, ServeError> {
    let unsafe_path = |path: &Path, reason: String| ServeError::UnsafeSocketPath {
        path: path.to_owned(),
        reason,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if std::fs::symlink_metadata(parent).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|error| unsafe_path(parent, format!("cannot create the folder: {error}")))?;
    }
    check_socket_folder(parent).map_err(|reason| unsafe_path(parent, reason))?;
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(unsafe_path(path, "exists and is not a socket".to_owned()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServeError::InUse(endpoint.clone())),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|error| {
                    unsafe_path(path, format!("stale socket cannot be removed: {error}"))
                })?
            }
            Err(error) => {
                return Err(unsafe_path(
                    path,
                    format!("a socket is there and cannot be checked: {error}"),
                ));
            }
        }
    }
    // The socket is created with the umask's permissions; make it owner-only from the start
    // so no one can connect between bind and chmod.
    // SAFETY: umask only swaps the process's file-creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let listener = bound.map_err(|source| ServeError::Bind {
        endpoint: endpoint.clone(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|error| {
        unsafe_path(path, format!("cannot make the socket owner-only: {error}"))
    })?;
    let metadata = std::fs::symlink_metadata(path)
        .map_err(|error| unsafe_path(path, format!("socket vanished: {error}")))?;
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
        .map(|listener| Listener::Unix {
            listener,
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
        })
        .map_err(|source| ServeError::Bind {
            endpoint: endpoint.clone(),
            source,
        })
}

/// Why a socket's folder is unsafe, if it is.
fn check_socket_folder(folder: &Path) -> Result<(), String> {
    let metadata =
        std::fs::symlink_metadata(folder).map_err(|error| format!("cannot read it: {error}"))?;
    if !metadata.file_type().is_dir() {
        return Err("is not a directory (a symlink is not accepted)".to_owned());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if metadata.uid() != me && metadata.uid() != 0 {
        return Err(format!(
            "is owned by uid {}, not by this user ({me}) or root",
            metadata.uid()
        ));
    }
    let mode = metadata.mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(format!(
            "group or others can write it (mode {:o}), so they could replace the socket",
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_folders_must_be_private_or_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("f");
        std::fs::create_dir(&folder).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_socket_folder(&folder), Ok(()));
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            check_socket_folder(&folder)
                .unwrap_err()
                .contains("others can write")
        );
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(check_socket_folder(&folder), Ok(()), "sticky like /tmp");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&folder, &link).unwrap();
        assert!(check_socket_folder(&link).unwrap_err().contains("symlink"));
    }
}
