//! Countries (ISO 3166-1 alpha-2) and the regions requests can name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Region {
    NorthAmerica,
    SouthAmerica,
    Europe,
    Africa,
    MiddleEast,
    Asia,
    Oceania,
}

impl Region {
    pub const ALL: [Region; 7] = [
        Self::NorthAmerica,
        Self::SouthAmerica,
        Self::Europe,
        Self::Africa,
        Self::MiddleEast,
        Self::Asia,
        Self::Oceania,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NorthAmerica => "north-america",
            Self::SouthAmerica => "south-america",
            Self::Europe => "europe",
            Self::Africa => "africa",
            Self::MiddleEast => "middle-east",
            Self::Asia => "asia",
            Self::Oceania => "oceania",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            format!(
                "unknown region {s:?}: expected one of north-america, south-america, europe, africa, middle-east, asia, oceania"
            )
        })
    }
}

const REGIONS: &[(Region, &str)] = &[
    (Region::NorthAmerica, "US CA MX GT CR PA CU DO JM PR BS HN NI SV BZ HT TT"),
    (Region::SouthAmerica, "BR AR CL CO PE VE EC UY PY BO GY SR"),
    (
        Region::Europe,
        "DE FR GB NL BE LU IE ES PT IT CH AT PL CZ SK HU RO BG GR SE NO DK FI IS EE LV LT UA BY MD RS HR SI BA ME MK AL MT CY LI MC AD SM",
    ),
    (Region::Africa, "ZA NG KE EG MA TN DZ GH ET TZ UG SN CI CM AO RW ZW ZM MZ BW NA MU"),
    (Region::MiddleEast, "AE SA IL TR QA KW BH OM JO LB IR IQ"),
    (Region::Asia, "CN JP KR IN SG HK TW TH VN MY ID PH PK BD LK NP KZ UZ MN KH"),
    (Region::Oceania, "AU NZ FJ PG"),
];

/// The region a country belongs to, if herd's table knows it.
pub fn region_of(country: &str) -> Option<Region> {
    REGIONS.iter().find(|(_, countries)| countries.split(' ').any(|c| c == country)).map(|(region, _)| *region)
}

/// The countries of a region, as herd's table lists them.
pub fn countries_of(region: Region) -> impl Iterator<Item = &'static str> {
    REGIONS.iter().filter(move |(r, _)| *r == region).flat_map(|(_, countries)| countries.split(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_belong_to_one_region() {
        assert_eq!(region_of("DE"), Some(Region::Europe));
        assert_eq!(region_of("JP"), Some(Region::Asia));
        assert_eq!(region_of("ZZ"), None);
        let mut seen = std::collections::HashSet::new();
        for region in Region::ALL {
            for country in countries_of(region) {
                assert_eq!(country.len(), 2);
                assert!(seen.insert(country), "{country} listed twice");
            }
        }
        assert_eq!("Europe".parse::<Region>().unwrap(), Region::Europe);
    }
}
