"""Realistic fake patient identities for the generated cohort's DICOM headers (seeded, never real people).

Real hospital DICOM carries the patient's name, birth date, address, telephone, other names, the referring
physician, the institution and an accession number. The demo cohort writes made-up values of the same kinds so
that the identity tests (``tests/flows/test_phi_store.py``) have something to look for: none of these values may
reach the store, the reports, MLflow or the API. Every value is a pure function of (patient id, seed), so CT,
PET and RTSTRUCT of one patient agree and reruns write identical files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

# Distinctive names (>= 6 letters, not English words, not gene symbols): a search of the store for them cannot
# hit by chance.
_FAMILY = ("Kowalczyk", "Okonkwo", "Lindqvist", "Fitzgerald", "Nakamura", "Abernathy", "Castellano", "Donnelly",
           "Ferreira", "Gallagher", "Haugland", "Ivanova", "Jablonski", "Kristiansen", "Lombardi", "Montgomery",
           "Nwachukwu", "Oyelaran", "Pemberton", "Quintanilla", "Rasmussen", "Szczepanski", "Takahashi",
           "Underwood", "Vasquez-Ortega", "Whitfield", "Yamamoto", "Zielinski", "Brannigan", "Delacroix",
           "Esterhazy", "Gunnarsdottir", "Hollingsworth", "Mbeki-Adeyemi", "Ostrowski", "Petrakis")
_GIVEN_F = ("Margarethe", "Winifred", "Beatrice", "Ingeborg", "Yevgenia", "Leopoldine", "Oluwaseun", "Philippa",
            "Rosalind", "Theodora", "Genevieve", "Henrietta", "Marisol", "Annelies", "Clementine", "Ottilie")
_GIVEN_M = ("Bartholomew", "Cornelius", "Theodore", "Lysander", "Augustin", "Reginald", "Chidubem", "Evander",
            "Fitzwilliam", "Hieronymus", "Leopold", "Mortimer", "Percival", "Sebastiano", "Thaddeus", "Wilhelm")
_STREETS = ("Larkspur", "Wisteria", "Brambleton", "Quarrystone", "Hawthorne", "Juniperberry", "Kestrel Ridge",
            "Marigold", "Nettlefield", "Oakhaven", "Pinecastle", "Riverbend", "Sycamore Hollow", "Thistledown")
_SUFFIXES = ("Lane", "Avenue", "Road", "Court", "Drive", "Crescent", "Terrace")
_CITIES = (("Millbrook", "OR", "97321"), ("Ashford Falls", "VT", "05143"), ("Cedar Bluff", "IA", "52240"),
           ("Port Elspeth", "ME", "04011"), ("Grangeville", "ID", "83530"), ("Harlow Springs", "TN", "37064"))
_INSTITUTIONS = ("St. Ansgar Memorial Hospital", "Wexford Valley Cancer Centre", "Holloway University Clinic")
_PHYSICIANS = ("Oberholzer^Tamsin^^Dr", "Achterberg^Ravindran^^Dr", "Pillai-Sundaram^Brunhilde^^Dr",
               "Esposito-Quayle^Desmond^^Dr")


@dataclass(frozen=True)
class FakeIdentity:
    """The identifying header values of one made-up patient (DICOM string forms)."""

    family_name: str
    given_name: str
    sex: str  # 'F' or 'M': picks the given name (the headers keep PatientSex 'O', as the SUV tests expect)
    birth_date: str  # DA, YYYYMMDD
    maiden_name: str  # OtherPatientNames
    address: str
    telephone: str
    referring_physician: str  # PN 'Family^Given^^Prefix'
    institution: str
    accession_number: str

    @property
    def patient_name(self) -> str:
        """PN value 'Family^Given'."""
        return f"{self.family_name}^{self.given_name}"

    def search_strings(self) -> list[str]:
        """The values a leak check looks for (each long enough not to occur by chance)."""
        street = self.address.split(",")[0].split(" ", 1)[1]
        return [self.family_name, self.given_name, self.maiden_name, self.birth_date, street, self.telephone,
                self.accession_number, self.referring_physician.split("^")[0], self.institution]


def fake_identity(patient_id: str, seed: int = 0) -> FakeIdentity:
    """A made-up identity for one patient: a pure function of (patient_id, seed)."""
    digest = hashlib.sha256(f"fusionrx-identity|{seed}|{patient_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    sex = "F" if rng.random() < 0.5 else "M"
    given = _GIVEN_F if sex == "F" else _GIVEN_M
    year, month, day = int(rng.integers(1935, 1976)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    city, state, postcode = _CITIES[int(rng.integers(len(_CITIES)))]
    street = f"{int(rng.integers(100, 9900))} {rng.choice(_STREETS)} {rng.choice(_SUFFIXES)}"
    return FakeIdentity(
        family_name=str(rng.choice(_FAMILY)), given_name=str(rng.choice(given)), sex=sex,
        birth_date=f"{year:04d}{month:02d}{day:02d}", maiden_name=str(rng.choice(_FAMILY)),
        address=f"{street}, {city}, {state} {postcode}", telephone=f"+1-555-{int(rng.integers(1000, 10000))}",
        referring_physician=str(rng.choice(_PHYSICIANS)), institution=str(rng.choice(_INSTITUTIONS)),
        accession_number=f"ACX{digest[8:13].hex().upper()}")


def write_identity(ds: Dataset, identity: FakeIdentity) -> None:
    """Set the patient, referring-physician, institution and accession attributes of a header."""
    ds.PatientName = identity.patient_name
    ds.PatientBirthDate = identity.birth_date
    ds.OtherPatientNames = f"{identity.maiden_name}^{identity.given_name}"
    ds.PatientAddress = identity.address
    ds.PatientTelephoneNumbers = identity.telephone
    ds.ReferringPhysicianName = identity.referring_physician
    ds.InstitutionName = identity.institution
    ds.InstitutionAddress = "1 Infirmary Plaza, " + identity.address.split(", ", 1)[1]
    ds.AccessionNumber = identity.accession_number
