-- wrk script of the benchmarks (bench/harness.py's `run_wrk`): POSTs a random body of a
-- file per request and checks the answers.
--
-- Environment (set by bench/harness.py):
--   USAGEGRAPH_WRK_BODIES       file of JSON request bodies, one a line
--                               ({"query": <a fixed document>, "variables": {...}})
--   USAGEGRAPH_WRK_KEY          API key, sent as `Authorization: Bearer <key>`
--   USAGEGRAPH_WRK_SEED         seed of the draws (thread n uses seed * 1000 + n)
--   USAGEGRAPH_WRK_CHECK_EVERY  1: check every answer (default); n > 1: every answer's
--                               status, the body of every n-th; 0: no `response` hook at all
--                               (wrk then reads no bodies; only its own status count > 399)
--
-- An answer is an error when its status is not 200 or its body holds a non-empty `errors`
-- list (`"errors":[{`: GraphQL errors or a payload's own) or `"balance":null` (a consumption
-- answered without its balance).
-- `done` prints one line for the caller to parse:
--   WRK_RESULT key=value ... (latencies in microseconds)

local bodies_path = os.getenv("USAGEGRAPH_WRK_BODIES")
local key = os.getenv("USAGEGRAPH_WRK_KEY")
if not bodies_path or not key then
  io.stderr:write("wrk_post.lua: set USAGEGRAPH_WRK_BODIES and USAGEGRAPH_WRK_KEY\n")
  os.exit(2)
end
local seed = tonumber(os.getenv("USAGEGRAPH_WRK_SEED") or "1")
local check_every = tonumber(os.getenv("USAGEGRAPH_WRK_CHECK_EVERY") or "1")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

-- The bodies are read once per Lua state (wrk's main one and each thread's); each thread
-- formats its requests in `init`, where wrk knows the host: formatted before, a request
-- has no Host header, which HTTP/1.1 servers such as Node's refuse with 400.
local bodies = {}
for body in io.lines(bodies_path) do
  if #body > 0 then
    bodies[#bodies + 1] = body
  end
end
if #bodies == 0 then
  io.stderr:write("wrk_post.lua: no request bodies in " .. bodies_path .. "\n")
  os.exit(2)
end
local count = #bodies
local requests = {}

-- Per-thread counters (globals, so that the main state's `done` reads them by thread:get).
answers = 0   -- answers seen by `response`
non200 = 0    -- answers whose status is not 200
checked = 0   -- bodies checked
bad_body = 0  -- checked bodies holding an error

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
  threads[thread_count] = thread
end

function init(args)
  math.randomseed(seed * 1000 + (thread_number or 0))
  wrk.headers["Host"] = wrk.host .. ":" .. wrk.port
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", nil, nil, body)
  end
end

function request()
  return requests[math.random(count)]
end

if check_every > 0 then
  local find = string.find
  -- Whether `body` holds `pattern`, which starts with the text `literal`: looked for as
  -- plain text first (memchr-fast), so that a long answer without it costs the load
  -- generator little; a pattern scan of a 55 KB answer took it most of a millisecond.
  local function holds(body, literal, pattern)
    return find(body, literal, 1, true) ~= nil and find(body, pattern) ~= nil
  end
  function response(status, headers, body)
    answers = answers + 1
    if status ~= 200 then
      non200 = non200 + 1
    elseif answers % check_every == 0 then
      checked = checked + 1
      if body == nil
        or holds(body, '"errors"', '"errors"%s*:%s*%[%s*{')
        or holds(body, '"balance"', '"balance"%s*:%s*null') then
        bad_body = bad_body + 1
      end
    end
  end
end

function done(summary, latency, requests)
  local totals = { answers = 0, non200 = 0, checked = 0, bad_body = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + (thread:get(name) or 0)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d bytes=%d threads=%d check_every=%d"
      .. " answers=%d non200=%d checked=%d bad_body=%d status_gt399=%d"
      .. " connect=%d read=%d write=%d timeout=%d"
      .. " p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, summary.bytes, thread_count, check_every,
    totals.answers, totals.non200, totals.checked, totals.bad_body, errors.status,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean
  ))
end
