// Call the editor API (qfbridge) signing with SigV4 from Node.js (>= 18), with no dependency.
//   QFBRIDGE_API_URL=https://abc123.execute-api.eu-west-3.amazonaws.com/prod \
//   AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… [AWS_SESSION_TOKEN=…] AWS_REGION=eu-west-3 \
//   node sigv4_call.mjs 21040107100019
// (With the AWS SDK v3, @smithy/signature-v4 does the same signing.)
import { createHash, createHmac } from "node:crypto";

const apiUrl = process.env.QFBRIDGE_API_URL.replace(/\/$/, "");
const region = process.env.AWS_REGION ?? "eu-west-3";
const accessKey = process.env.AWS_ACCESS_KEY_ID;
const secretKey = process.env.AWS_SECRET_ACCESS_KEY;
const sessionToken = process.env.AWS_SESSION_TOKEN;

const sha256 = (data) => createHash("sha256").update(data).digest("hex");
const hmac = (key, data) => createHmac("sha256", key).update(data).digest();
const encode = (text) =>
  encodeURIComponent(text).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());

function signedHeaders(method, url, body, headers) {
  const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, ""); // 20260601T093000Z
  const day = amzDate.slice(0, 8);
  const all = { ...headers, host: url.host, "x-amz-date": amzDate };
  if (sessionToken) all["x-amz-security-token"] = sessionToken;
  const values = Object.fromEntries(Object.entries(all).map(([k, v]) => [k.toLowerCase(), String(v).trim()]));
  const names = Object.keys(values).sort();
  const path = url.pathname.split("/").map((s) => encode(decodeURIComponent(s))).join("/");
  const query = [...url.searchParams]
    .map(([k, v]) => [encode(k), encode(v)])
    .sort(([a, x], [b, y]) => (a === b ? (x < y ? -1 : 1) : a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const canonical = [
    method,
    path,
    query,
    names.map((n) => `${n}:${values[n]}\n`).join(""),
    names.join(";"),
    sha256(body),
  ].join("\n");
  const scope = `${day}/${region}/execute-api/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonical)].join("\n");
  const key = hmac(hmac(hmac(hmac(`AWS4${secretKey}`, day), region), "execute-api"), "aws4_request");
  const signature = createHmac("sha256", key).update(toSign).digest("hex");
  return {
    ...all,
    authorization: `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, SignedHeaders=${names.join(";")}, Signature=${signature}`,
  };
}

async function call(method, path, body) {
  const url = new URL(apiUrl + path);
  const payload = body === undefined ? "" : JSON.stringify(body);
  const headers = body === undefined ? {} : { "content-type": "application/json" };
  const response = await fetch(url, {
    method,
    headers: signedHeaders(method, url, payload, headers),
    body: body === undefined ? undefined : payload,
  });
  const text = await response.text();
  return [response.status, text ? JSON.parse(text) : null];
}

const siret = process.argv[2];
const [status, tenant] = await call("PUT", `/v1/tenants/${siret}`, { name: "Commune de Riez", cog: "04166" });
console.log(status, tenant.status);
const [listed, page] = await call("GET", "/v1/tenants?limit=100");
console.log(listed, page.items.some((t) => t.siret === siret));
