//! Which of the two servers a value, a share or a step belongs to. The protocol's asymmetries
//! (who listens, who adds a public constant, who holds the explicit correlations) are written
//! against this type rather than a bare `u8`, so a party is always 0 or 1 past the edges.
//! Files still store a `u8` (their layout does not change): `src/formats/` converts with
//! [`Party::try_from`] and `u8::from`.

use std::fmt;

/// One of the two servers: S0 (listens, evaluates garbled circuits) or S1 (connects, garbles;
/// its shares travel as seeds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    S0,
    S1,
}

impl Party {
    /// Both parties, in index order.
    pub const BOTH: [Party; 2] = [Party::S0, Party::S1];

    /// The other server.
    pub fn peer(self) -> Party {
        match self {
            Party::S0 => Party::S1,
            Party::S1 => Party::S0,
        }
    }

    /// 0 or 1, to index per-party arrays.
    pub fn index(self) -> usize {
        match self {
            Party::S0 => 0,
            Party::S1 => 1,
        }
    }

    pub fn is_s0(self) -> bool {
        self == Party::S0
    }

    pub fn is_s1(self) -> bool {
        self == Party::S1
    }
}

/// The number a file header and the command line use.
impl From<Party> for u8 {
    fn from(p: Party) -> u8 {
        p.index() as u8
    }
}

/// As the number (`0` or `1`): the JSON summaries print a party as they always have.
impl serde::Serialize for Party {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(u8::from(*self))
    }
}

/// A party number other than 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAParty(pub u8);

impl fmt::Display for NotAParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "party {} (0 or 1)", self.0)
    }
}

impl std::error::Error for NotAParty {}

impl TryFrom<u8> for Party {
    type Error = NotAParty;

    fn try_from(p: u8) -> Result<Party, NotAParty> {
        match p {
            0 => Ok(Party::S0),
            1 => Ok(Party::S1),
            _ => Err(NotAParty(p)),
        }
    }
}

/// `0` or `1`, as headers, file names and messages have always printed a party.
impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The number's own Display, so width and fill flags behave as they did on a u8.
        fmt::Display::fmt(&self.index(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_others_fail() {
        for p in Party::BOTH {
            assert_eq!(Party::try_from(u8::from(p)), Ok(p));
            assert_eq!(p.peer().peer(), p);
            assert_ne!(p.peer(), p);
            assert_eq!(p.to_string(), p.index().to_string());
        }
        assert!(Party::S0.is_s0() && Party::S1.is_s1());
        assert_eq!(Party::try_from(2), Err(NotAParty(2)));
        assert_eq!(NotAParty(7).to_string(), "party 7 (0 or 1)");
    }
}
