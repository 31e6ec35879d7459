// Drives a running Vigil FHIR server with a third-party client library (fhir-kit-client):
// CRUD, search, paging, history and a transaction. Reads VIGIL_FHIR_BASE and
// VIGIL_FHIR_TOKEN; prints one JSON object of what it observed on stdout and exits 0, or
// prints the failure on stderr and exits 1. The Rust test
// (crates/server/tests/server/third_party.rs) checks both.
import { Client } from 'fhir-kit-client';

const baseUrl = process.env.VIGIL_FHIR_BASE;
const token = process.env.VIGIL_FHIR_TOKEN;
if (!baseUrl || !token) {
  console.error('VIGIL_FHIR_BASE and VIGIL_FHIR_TOKEN must be set');
  process.exit(2);
}

const client = new Client({ baseUrl, bearerToken: token });
const out = {};

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

function ids(bundle) {
  return (bundle.entry ?? [])
    .filter((e) => e.search?.mode !== 'outcome' && e.resource?.resourceType !== 'OperationOutcome')
    .map((e) => e.resource.id);
}

async function main() {
  // The capability statement needs no token, but the client sends one anyway.
  const cap = await client.capabilityStatement();
  out.fhirVersion = cap.fhirVersion;

  // Create, read, update, vread, patch.
  const created = await client.create({
    resourceType: 'Patient',
    body: {
      resourceType: 'Patient',
      name: [{ family: 'Kitclient', given: ['Ada'] }],
      gender: 'female',
      birthDate: '1961-04-12',
    },
  });
  const pid = created.id;
  out.createdVersion = created.meta?.versionId;
  const read = await client.read({ resourceType: 'Patient', id: pid });
  out.readFamily = read.name?.[0]?.family;
  read.telecom = [{ system: 'phone', value: '+44 20 7946 0000' }];
  const updated = await client.update({ resourceType: 'Patient', id: pid, body: read });
  out.updatedVersion = updated.meta?.versionId;
  const v1 = await client.vread({ resourceType: 'Patient', id: pid, version: '1' });
  out.vreadHasTelecom = v1.telecom !== undefined;
  const patched = await client.patch({
    resourceType: 'Patient',
    id: pid,
    jsonPatch: [{ op: 'replace', path: '/gender', value: 'other' }],
  });
  out.patchedGender = patched.gender;
  out.patchedVersion = patched.meta?.versionId;

  // A transaction: Observations referring to the patient, one of them by urn:uuid to a
  // second patient created in the same Bundle.
  const entries = [];
  for (let i = 0; i < 7; i++) {
    entries.push({
      resource: {
        resourceType: 'Observation',
        status: 'final',
        category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
        subject: { reference: `Patient/${pid}` },
        effectiveDateTime: `2024-05-0${i + 1}T08:00:00Z`,
        valueQuantity: { value: 60 + i, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
      },
      request: { method: 'POST', url: 'Observation' },
    });
  }
  entries.push({
    fullUrl: 'urn:uuid:7d4c2f1e-0b7a-4b8e-9a55-3c1f0e2d9b61',
    resource: { resourceType: 'Patient', name: [{ family: 'Kitclient', given: ['Bea'] }] },
    request: { method: 'POST', url: 'Patient' },
  });
  entries.push({
    resource: {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8310-5' }] },
      subject: { reference: 'urn:uuid:7d4c2f1e-0b7a-4b8e-9a55-3c1f0e2d9b61' },
      valueQuantity: { value: 37.1, unit: 'Cel', system: 'http://unitsofmeasure.org', code: 'Cel' },
    },
    request: { method: 'POST', url: 'Observation' },
  });
  // client.transaction() posts to `${base}/` (with the trailing slash).
  const tx = await client.transaction({
    body: { resourceType: 'Bundle', type: 'transaction', entry: entries },
  });
  out.transactionType = tx.type;
  out.transactionStatuses = tx.entry.map((e) => e.response.status);
  const bea = tx.entry[7].resource.id;
  out.urnResolved = tx.entry[8].resource.subject.reference === `Patient/${bea}`;

  // Search with paging: 7 heart rates, 3 per page, newest first.
  let page = await client.search({
    resourceType: 'Observation',
    searchParams: { subject: `Patient/${pid}`, code: 'http://loinc.org|8867-4', _sort: '-date', _count: 3, _total: 'accurate' },
  });
  out.searchTotal = page.total;
  const pageSizes = [];
  const dates = [];
  while (page) {
    const got = (page.entry ?? []).filter((e) => e.search?.mode === 'match');
    pageSizes.push(got.length);
    for (const e of got) dates.push(e.resource.effectiveDateTime);
    const next = client.nextPage({ bundle: page });
    page = next ? await next : undefined;
  }
  out.pageSizes = pageSizes;
  out.datesDescending = dates.every((d, i) => i === 0 || dates[i - 1] >= d);
  out.searchedCount = dates.length;
  const byName = await client.search({ resourceType: 'Patient', searchParams: { name: 'kitclient' } });
  out.patientsByName = ids(byName).length;

  // History of the patient: three versions, newest first.
  const hist = await client.history({ resourceType: 'Patient', id: pid });
  out.historyType = hist.type;
  out.historyVersions = (hist.entry ?? []).map((e) => e.resource?.meta?.versionId);
  const typeHist = await client.history({ resourceType: 'Observation' });
  out.typeHistoryCount = (typeHist.entry ?? []).length;

  // Delete, then read answers 410 Gone.
  await client.delete({ resourceType: 'Patient', id: bea });
  try {
    await client.read({ resourceType: 'Patient', id: bea });
    out.readAfterDelete = 200;
  } catch (e) {
    out.readAfterDelete = e.response?.status ?? -1;
  }
  // A wrong token is refused with 401.
  const bad = new Client({ baseUrl, bearerToken: 'not-a-token' });
  try {
    await bad.read({ resourceType: 'Patient', id: pid });
    out.badTokenStatus = 200;
  } catch (e) {
    out.badTokenStatus = e.response?.status ?? -1;
  }
  check(out.readFamily === 'Kitclient', 'read returns the created patient');
  console.log(JSON.stringify(out));
}

main().then(() => process.exit(0)).catch((e) => {
  const detail = e.response ? ` ${JSON.stringify(e.response.data)}` : '';
  console.error(`${e.stack ?? e}${detail}`);
  process.exit(1);
});
