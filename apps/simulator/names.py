"""Word lists for realistic, deterministic names of a mid-market construction company's world."""

from __future__ import annotations

OWNERS: tuple[tuple[str, str], ...] = (
    ("Maria", "Chen"), ("James", "Okafor"), ("Priya", "Raman"), ("Daniel", "Brooks"),
    ("Sofia", "Alvarez"), ("Tom", "Becker"), ("Aisha", "Mohammed"), ("Kevin", "O'Brien"),
    ("Laura", "Nguyen"), ("Marcus", "Hill"), ("Elena", "Petrova"), ("Ryan", "Castillo"),
)
OWNER_FIRST = (
    "Alex", "Beth", "Carlos", "Dana", "Ethan", "Fatima", "Grace", "Hiro", "Irene", "Jonah", "Kara", "Liam",
    "Mei", "Nadia", "Omar", "Paula", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yara", "Zoe",
)
OWNER_LAST = (
    "Abbott", "Baker", "Cho", "Diaz", "Evans", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kowalski",
    "Larsen", "Moreno", "Nakamura", "Osei", "Patel", "Quinlan", "Rossi", "Schmidt", "Tanaka", "Usman",
    "Varga", "Walsh", "Xu", "Young", "Zimmer",
)

PLACES = (
    "Riverside", "Oakmont", "Cedar Creek", "Maple Grove", "Stonebridge", "Willow Bend", "Eastlake", "Westfield",
    "Brookhaven", "Fairview", "Highland", "Lakeview", "Millbrook", "Northfield", "Pine Hollow", "Ridgeway",
    "Southport", "Sterling", "Sunset Hills", "Timberline", "Valley Forge", "Whitestone", "Ashford", "Bayside",
    "Clearwater", "Deer Park", "Elmhurst", "Foxborough", "Glenwood", "Hawthorne", "Kingsbridge", "Laurel",
    "Midland", "Newport", "Orchard Park", "Prescott", "Quarry Hill", "Rosewood", "Seaview", "Tanglewood",
    "Union Square", "Vista Grande", "Windham", "Yorktown", "Alder", "Birchwood", "Canyon", "Driftwood",
    "Evergreen", "Falcon", "Golden Gate", "Heritage", "Iron Creek", "Juniper", "Keystone", "Liberty",
    "Mesa", "Northstar", "Old Mill", "Pacific", "Redstone", "Silver Lake", "Three Rivers", "Upland",
)
CLIENT_KINDS = (
    "Builders", "Development Group", "Properties", "Holdings", "Medical Center", "Health System",
    "School District", "Realty Partners", "Hospitality Group", "Logistics", "Manufacturing", "Foods",
    "Capital Partners", "Senior Living", "University", "Hotels", "Retail Centers", "Industrial Park",
    "Storage", "Housing Authority", "Church", "Community College", "Clinic", "Data Centers", "Brewing Co",
    "Auto Group", "Land Company", "Ventures", "Investments", "Water District",
)
STATES = (
    ("Portland", "OR"), ("Seattle", "WA"), ("Boise", "ID"), ("Sacramento", "CA"), ("Reno", "NV"),
    ("Spokane", "WA"), ("Eugene", "OR"), ("Tacoma", "WA"), ("Fresno", "CA"), ("Salem", "OR"),
)
BUILDINGS = (
    "Medical Office Building", "Warehouse", "Distribution Center", "Elementary School", "Parking Garage",
    "Office Tower", "Retail Center", "Apartments", "Clinic Renovation", "Fire Station", "Library",
    "Community Center", "Hotel", "Lab Building", "Senior Housing", "Manufacturing Plant", "Data Hall",
    "Gymnasium", "Student Housing", "Cold Storage", "Tenant Improvement", "Church Addition", "Brewery",
    "Dealership", "Water Treatment Upgrade", "Transit Center", "Mixed-Use Block", "Urgent Care",
)
STREETS = (
    "Elm Street", "Harbor Drive", "Main Street", "5th Avenue", "Oak Boulevard", "Mill Road", "Station Way",
    "Lake Avenue", "Broadway", "Cedar Lane", "Park Place", "Market Street", "River Road", "Hill Street",
    "Pine Avenue", "Commerce Way", "Industrial Drive", "College Avenue", "Bay Street", "Summit Avenue",
)
PHASES = ("", "", "", "Phase 2 ", "Phase 3 ", "North ", "South ", "East Wing ", "West Wing ")

TRADES = (
    ("Electrical", "Electrical Contractors"), ("Plumbing", "Plumbing & Heating"), ("HVAC", "Mechanical"),
    ("Concrete", "Concrete"), ("Steel", "Steel Erectors"), ("Roofing", "Roofing"), ("Drywall", "Drywall"),
    ("Glazing", "Glass & Glazing"), ("Excavation", "Excavation"), ("Paving", "Paving"),
    ("Fire Protection", "Fire Protection"), ("Painting", "Painting"), ("Masonry", "Masonry"),
    ("Flooring", "Flooring"), ("Elevators", "Elevator Co"), ("Landscaping", "Landscape"),
)
VENDOR_WORDS = (
    "Apex", "Blue Line", "Cascade", "Delta", "Eagle", "Frontier", "Granite", "Horizon", "Ironclad",
    "Keystone", "Lone Pine", "Metro", "Northwest", "Precision", "Quality", "Reliable", "Summit", "Titan",
    "United", "Vanguard", "Western", "Allied", "Bedrock", "Coastal", "Dynamic", "Elite", "Pioneer",
)

MILESTONES = (
    "Notice to Proceed", "Foundations Complete", "Structure Topped Out", "Building Dry-In",
    "Substantial Completion",
)
TASKS = ("MEP Rough-In", "Owner Walkthrough", "Site Logistics Plan", "Final Inspection Prep")

CO_SCOPES = (
    "Owner-requested upgrade to lobby finishes", "Unforeseen rock excavation", "Additional fire sprinkler heads",
    "Revised structural steel connections", "Added EV charging stations", "Roof drain rerouting",
    "Upgraded HVAC controls", "Concealed water damage remediation", "Added data cabling",
    "Revised storefront glazing", "Additional site lighting", "Asbestos abatement", "Elevator cab upgrade",
    "Change to exterior cladding", "Added backup generator", "ADA restroom modifications",
    "Soil stabilization", "Acoustic ceiling upgrade", "Security system expansion", "Permit-driven seismic bracing",
    "Credit for deleted canopy", "Value engineering: alternate flooring", "Overtime to recover schedule",
    "Utility relocation", "Additional waterproofing",
)
SUBMITTALS = (
    ("03 30 00", "Cast-in-place concrete mix design"), ("05 12 00", "Structural steel shop drawings"),
    ("07 21 00", "Thermal insulation product data"), ("07 54 00", "TPO roofing system"),
    ("08 44 13", "Curtain wall shop drawings"), ("09 29 00", "Gypsum board assemblies"),
    ("09 65 19", "Resilient tile flooring samples"), ("14 21 00", "Traction elevator product data"),
    ("21 13 13", "Wet-pipe sprinkler shop drawings"), ("22 40 00", "Plumbing fixtures"),
    ("23 05 93", "Testing, adjusting and balancing plan"), ("26 24 16", "Panelboards"),
    ("26 32 13", "Emergency generator"), ("28 31 00", "Fire alarm system"), ("31 23 00", "Excavation and fill"),
    ("32 12 16", "Asphalt paving mix design"),
)
SUBMITTAL_STATUSES = ("Draft", "Open", "Open", "Revise and Resubmit", "Approved", "Approved as Noted", "Closed")
CO_STATUSES = ("draft", "pending - in review", "pending - pricing", "approved", "rejected", "void")
EXPENSE_MEMOS = (
    "Materials", "Subcontract labor", "Equipment rental", "Concrete delivery", "Rebar", "Lumber package",
    "Electrical rough-in", "Dumpster service", "Crane rental", "Temporary power", "Testing and inspection",
)
