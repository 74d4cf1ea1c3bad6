//! Node addresses: `host:port`, given alone, as a comma-separated list, or as
//! etcd-style `multi:///a:1,b:2`.

use tonic::transport::Endpoint;

use crate::ClientError;

/// Parses `multi:///a:1,b:2`, `a:1,b:2` or `a:1` into addresses.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, ClientError> {
    let list = text.strip_prefix("multi:///").unwrap_or(text);
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if endpoints.is_empty() {
        return Err(ClientError::NoEndpoints);
    }
    for endpoint in &endpoints {
        check_address(endpoint)?;
    }
    Ok(endpoints)
}

/// Checks that `address` is `host:port`.
pub fn check_address(address: &str) -> Result<(), ClientError> {
    endpoint(address, false).map(|_| ())
}

/// The endpoint of the node at `address`, once checked: `https` when the
/// connection uses TLS, plain-text HTTP/2 otherwise.
pub fn endpoint(address: &str, tls: bool) -> Result<Endpoint, ClientError> {
    let bad = || ClientError::BadEndpoint(address.to_string());
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || address.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let scheme = if tls { "https" } else { "http" };
    Endpoint::from_shared(format!("{scheme}://{address}")).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_parse_in_every_form() {
        assert_eq!(
            parse_endpoints("multi:///a:1,b:2").unwrap(),
            vec!["a:1", "b:2"]
        );
        assert_eq!(parse_endpoints("a:1, b:2").unwrap(), vec!["a:1", "b:2"]);
        assert_eq!(
            parse_endpoints("127.0.0.1:50051").unwrap(),
            vec!["127.0.0.1:50051"]
        );
        assert!(matches!(parse_endpoints(""), Err(ClientError::NoEndpoints)));
        for bad in ["a", "a:99999", "http://a:1", ":1", "a b:1"] {
            assert!(
                matches!(parse_endpoints(bad), Err(ClientError::BadEndpoint(_))),
                "{bad:?} accepted"
            );
        }
    }
}
