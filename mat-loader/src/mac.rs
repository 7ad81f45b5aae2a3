//! Ethernet addresses as the control plane reads and writes them: `aa:bb:cc:dd:ee:ff`, and
//! prefixes `aa:bb:cc:00:00:00/24`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    pub fn from_u64(v: u64) -> Self {
        let b = v.to_be_bytes();
        Mac([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    pub fn to_u64(self) -> u64 {
        let m = self.0;
        u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
    }

    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }

    /// Group bit set (broadcast included).
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    pub fn is_local(self) -> bool {
        self.0[0] & 2 != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six two-digit hex octets like 52:54:00:12:34:56)")]
pub struct ParseMacError(pub String);

impl FromStr for Mac {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_owned());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            // Exactly two hex digits: from_str_radix alone would take "+2" and "7".
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A MAC prefix: the first `len` bits of `mac` (the rest are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacPrefix {
    pub mac: Mac,
    pub len: u8,
}

impl MacPrefix {
    /// `mac/len` with the bits past `len` cleared.
    pub fn new(mac: Mac, len: u8) -> Self {
        let len = len.min(48);
        Self {
            mac: Mac::from_u64(mac.to_u64() & mask(len)),
            len,
        }
    }

    pub fn contains(self, mac: Mac) -> bool {
        mac.to_u64() & mask(self.len) == self.mac.to_u64()
    }
}

/// The 48-bit mask of a `len`-bit prefix.
pub fn mask(len: u8) -> u64 {
    const ALL: u64 = (1 << 48) - 1;
    match len {
        0 => 0,
        l if l >= 48 => ALL,
        l => ALL & !(ALL >> l),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParsePrefixError {
    #[error("{0:?} is not a MAC prefix (expected MAC/LEN like 02:00:5e:00:00:00/24)")]
    Syntax(String),
    #[error("prefix length {0} is longer than 48 bits")]
    TooLong(u32),
    #[error("{0} has bits set past its length /{1}")]
    HostBits(Mac, u8),
}

impl FromStr for MacPrefix {
    type Err = ParsePrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ParsePrefixError::Syntax(s.to_owned());
        let (mac, len) = s.split_once('/').ok_or_else(syntax)?;
        let mac: Mac = mac.parse().map_err(|_| syntax())?;
        let len: u32 = len.parse().map_err(|_| syntax())?;
        if len > 48 {
            return Err(ParsePrefixError::TooLong(len));
        }
        let p = MacPrefix::new(mac, len as u8);
        if p.mac != mac {
            return Err(ParsePrefixError::HostBits(mac, len as u8));
        }
        Ok(p)
    }
}

impl fmt::Display for MacPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mac, self.len)
    }
}

impl Serialize for MacPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let m: Mac = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<Mac>().unwrap(), m);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "52:54:00:ab:cd:0g",
            "525:4:00:ab:cd:0f",
            "+2:54:00:ab:cd:ef",
            "2:54:00:ab:cd:ef",
            "52:54:00:ab:cd:-f",
            "52:54-00:ab:cd:ef",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert_eq!(Mac::from_u64(m.to_u64()), m);
    }

    #[test]
    fn prefixes() {
        let p: MacPrefix = "02:00:5e:00:00:00/24".parse().unwrap();
        assert!(p.contains("02:00:5e:01:02:03".parse().unwrap()));
        assert!(!p.contains("02:00:5f:01:02:03".parse().unwrap()));
        assert_eq!(p.to_string(), "02:00:5e:00:00:00/24");
        assert!(matches!(
            "02:00:5e:00:00:01/24".parse::<MacPrefix>(),
            Err(ParsePrefixError::HostBits(..))
        ));
        assert!(matches!(
            "02:00:5e:00:00:00/49".parse::<MacPrefix>(),
            Err(ParsePrefixError::TooLong(49))
        ));
        assert_eq!(mask(0), 0);
        assert_eq!(mask(48), 0xffff_ffff_ffff);
        assert_eq!(mask(24), 0xffff_ff00_0000);
    }
}
