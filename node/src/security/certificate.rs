//! The subject's common name of an X.509 certificate, read straight from its
//! DER encoding. The certificate has already been verified by rustls when
//! this runs; the reader still checks every length, so that no input, however
//! malformed, can make it panic (a fuzz test makes sure).

/// One DER element at the start of `input`: its tag, its contents and what
/// follows it. `None` if the element is truncated or its length is absurd.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits give how many length bytes follow.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, rest) = rest.split_at(length);
    Some((tag, contents, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// The optional `[0] EXPLICIT Version` of a TBSCertificate.
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The common name in the subject of the DER certificate `der`: `None` if
/// there is none, if there are several (an ambiguous name gives no role),
/// or if the certificate cannot be read.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else {
        return None;
    };
    let (tag, _, after_version) = element(tbs)?;
    if tag == VERSION {
        tbs = after_version;
    }
    // serialNumber, signature, issuer and validity come before the subject.
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, mut names, _) = element(tbs)? else {
        return None;
    };
    let mut found = None;
    while !names.is_empty() {
        let (SET, mut attributes, rest) = element(names)? else {
            return None;
        };
        names = rest;
        while !attributes.is_empty() {
            let (SEQUENCE, attribute, rest) = element(attributes)? else {
                return None;
            };
            attributes = rest;
            let (OID, oid, value) = element(attribute)? else {
                return None;
            };
            if oid != COMMON_NAME {
                continue;
            }
            if found.is_some() {
                return None;
            }
            let (tag, text, _) = element(value)?;
            found = Some(directory_string(tag, text)?);
        }
    }
    found
}

/// A DirectoryString's text, in the encodings certificates use.
fn directory_string(tag: u8, text: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String.
        0x0c | 0x13 | 0x16 => String::from_utf8(text.to_vec()).ok(),
        // BMPString: UTF-16, big-endian.
        0x1e => {
            if !text.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = text
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // TeletexString: Latin-1 in practice.
        0x14 => Some(text.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A certificate as openssl writes one: version, serial, algorithm,
    /// issuer, validity, then the subject with an O and a CN.
    fn certificate_with_subject(subject: &[u8]) -> Vec<u8> {
        fn wrap(tag: u8, contents: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if contents.len() < 0x80 {
                out.push(contents.len() as u8);
            } else {
                out.push(0x82);
                out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(contents);
            out
        }
        let mut tbs = wrap(VERSION, &wrap(0x02, &[2]));
        tbs.extend(wrap(0x02, &[1, 2, 3]));
        tbs.extend(wrap(SEQUENCE, &wrap(OID, &[1, 2])));
        tbs.extend(wrap(SEQUENCE, &[]));
        tbs.extend(wrap(SEQUENCE, &[]));
        tbs.extend(wrap(SEQUENCE, subject));
        wrap(SEQUENCE, &wrap(SEQUENCE, &tbs))
    }

    fn attribute(oid: &[u8], tag: u8, text: &[u8]) -> Vec<u8> {
        let mut atv = vec![OID, oid.len() as u8];
        atv.extend_from_slice(oid);
        atv.extend([tag, text.len() as u8]);
        atv.extend_from_slice(text);
        let mut sequence = vec![SEQUENCE, atv.len() as u8];
        sequence.extend(atv);
        let mut set = vec![SET, sequence.len() as u8];
        set.extend(sequence);
        set
    }

    #[test]
    fn the_common_name_is_found_among_other_attributes() {
        let mut subject = attribute(&[0x55, 0x04, 0x0a], 0x0c, b"raftkv");
        subject.extend(attribute(&COMMON_NAME, 0x13, b"admin"));
        assert_eq!(
            common_name(&certificate_with_subject(&subject)).as_deref(),
            Some("admin")
        );
    }

    #[test]
    fn no_name_or_two_names_give_none() {
        let organisation = attribute(&[0x55, 0x04, 0x0a], 0x0c, b"raftkv");
        assert_eq!(common_name(&certificate_with_subject(&organisation)), None);
        let mut two = attribute(&COMMON_NAME, 0x0c, b"node");
        two.extend(attribute(&COMMON_NAME, 0x0c, b"admin"));
        assert_eq!(common_name(&certificate_with_subject(&two)), None);
    }

    proptest! {
        // RAFTKV_FUZZ_CASES: a long run (scripts/fuzz.sh).
        #![proptest_config(ProptestConfig {
            cases: std::env::var("RAFTKV_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4096),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any bytes at all: an answer or `None`, never a panic.
        #[test]
        fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = common_name(&bytes);
        }

        /// A real certificate shape with corrupted bytes: never a panic.
        #[test]
        fn corrupted_certificates_are_read_without_panicking(
            at in 0usize..64, value in any::<u8>(), cut in 0usize..64
        ) {
            let mut der = certificate_with_subject(&attribute(&COMMON_NAME, 0x0c, b"node"));
            let at = at % der.len();
            der[at] = value;
            der.truncate(der.len() - cut.min(der.len()));
            let _ = common_name(&der);
        }
    }
}
