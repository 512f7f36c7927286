// Runs graphql-http's server audits (GraphQL over HTTP conformance) against a URL and prints
// one JSON line per audit: {"id", "name", "status", "reason"?, "response"?}. Exits 1 when
// any audit is not ok. Usage: node audit.mjs <url>; USAGEGRAPH_AUDIT_AUTHORIZATION, when set,
// is sent as the Authorization header of every request.
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <graphql url>');
  process.exit(2);
}
const authorization = process.env.USAGEGRAPH_AUDIT_AUTHORIZATION;

function fetchWithCredential(input, init = {}) {
  if (!authorization) return fetch(input, init);
  const headers = new Headers(init.headers);
  headers.set('authorization', authorization);
  return fetch(input, { ...init, headers });
}

let failed = 0;
for (const audit of serverAudits({ url, fetchFn: fetchWithCredential })) {
  const result = await audit.fn();
  const line = { id: audit.id, name: audit.name, status: result.status };
  if (result.status !== 'ok') {
    failed += 1;
    line.reason = result.reason;
    const response = result.response;
    line.response = {
      status: response.status,
      contentType: response.headers.get('content-type'),
      body: (await response.text()).slice(0, 500),
    };
  }
  console.log(JSON.stringify(line));
}
process.exit(failed ? 1 : 0);
