//! TLS for tests: a certificate authority made at test time (nothing is committed), the leaves it
//! signs (good, expired, for another name, or from a CA nobody trusts), and a TLS-terminating
//! proxy that puts moto server behind HTTPS.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A leaf certificate and its key, as a server is configured with them.
#[derive(Clone)]
pub struct Leaf {
    /// The leaf, then the CA that signed it.
    pub chain_pem: String,
    pub key_pem: String,
}

/// A test certificate authority (ECDSA P-256), made fresh by [`TestCa::new`].
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("a P-256 key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("the CA signs itself");
        Self { cert, key }
    }

    /// The CA certificate, as a CA bundle (`SSL_CERT_FILE`) holds it.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A root store holding this CA alone (for a client that trusts nothing else).
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("the CA certificate is valid");
        roots
    }

    /// A leaf for `localhost` (DNS name `localhost` and IP 127.0.0.1), valid now.
    pub fn localhost(&self) -> Leaf {
        self.leaf(&["localhost"], true, false)
    }

    /// A leaf for `localhost` whose validity ended in 2021.
    pub fn expired_localhost(&self) -> Leaf {
        self.leaf(&["localhost"], true, true)
    }

    /// A leaf for `name` only (no IP address), valid now.
    pub fn for_name(&self, name: &str) -> Leaf {
        self.leaf(&[name], false, false)
    }

    fn leaf(&self, names: &[&str], loopback: bool, expired: bool) -> Leaf {
        let key = KeyPair::generate().expect("a P-256 key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid DNS names");
        params.distinguished_name.push(DnType::CommonName, names[0].as_str());
        if loopback {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        } else {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("the CA signs the leaf");
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The CA a test trusts and the leaves it needs, made once per test binary: `trusted` signs the
/// good, expired and wrong-name leaves; `untrusted` (another CA, in no bundle) signs its own
/// `localhost` leaf.
pub struct TestPki {
    pub ca: TestCa,
    pub localhost: Leaf,
    pub expired: Leaf,
    pub wrong_name: Leaf,
    pub untrusted: Leaf,
}

impl TestPki {
    pub fn new() -> Self {
        let ca = TestCa::new("wxa test CA");
        let rogue = TestCa::new("wxa untrusted test CA");
        Self {
            localhost: ca.localhost(),
            expired: ca.expired_localhost(),
            wrong_name: ca.for_name("wrong-host.example"),
            untrusted: rogue.localhost(),
            ca,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A TLS-terminating TCP proxy on 127.0.0.1: serves `leaf` and forwards the plain bytes to
/// `upstream` (moto server). Dropping it stops accepting.
pub struct TlsProxy {
    pub addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    /// Starts the proxy on the current tokio runtime.
    pub async fn start(upstream: SocketAddr, leaf: &Leaf) -> Self {
        let acceptor = wechat_sim::tls_acceptor(&leaf.chain_pem, &leaf.key_pem).expect("the leaf loads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                // As servers do: without it a TLS flight's later records wait on a delayed ACK (40 ms).
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here, with nothing forwarded.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self { addr, handshakes, task }
    }

    /// How many TLS handshakes completed (connections that were forwarded).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// `https://localhost:PORT`: the name the leaf is checked against.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address of moto server's `http://127.0.0.1:PORT` endpoint.
pub fn plain_addr(endpoint: &str) -> SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("moto's endpoint is http://IP:PORT")
}
