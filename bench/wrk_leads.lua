-- wrk script: POST webhook bodies of LEADS leads with unique ids, report JSON.
local leads = tonumber(os.getenv("LEADS") or "1")
local secret = os.getenv("SECRET") or ""
local path = os.getenv("WEBHOOK_PATH") or "/lead/webhook"
local threads = {}
local counter = 0

-- Ids shaped like the provider's ("led_slp3mt0qxvIXYUIK": led_ + 16 letters and digits):
-- a random per-thread prefix and a counter written in letters, unique per run.
local alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

local function letters(n, width)
  local out = {}
  for i = width, 1, -1 do
    local d = n % 52
    out[i] = alphabet:sub(d + 1, d + 1)
    n = math.floor(n / 52)
  end
  return table.concat(out)
end

function setup(thread)
  -- SEED: several wrk processes started in the same second (bench/pg_replicas.py)
  math.randomseed(os.time() + #threads + tonumber(os.getenv("SEED") or "0") * 1000)
  thread:set("tid", letters(math.random(0, 52 ^ 5), 6))
  table.insert(threads, thread)
end

local lead_fmt = '{"id":"led_%s%s","url":"https://some-site.com/page-with-lead-form/",'
  .. '"created":"2018-07-12T16:29:42Z","data":{"first_name":"John","middle_name":"",'
  .. '"last_name":"Doe","phone":"+123123123123123","position":"Agent",'
  .. '"email":"john.doe@example.com","state":"Georgia","organization_name":"Org",'
  .. '"organization_size":"101-250","organization_country":"United States",'
  .. '"organization_state":"Alabama","organization_city":"Montgomery",'
  .. '"interested_in":"I would like information for my department"}}'

request = function()
  counter = counter + 1
  local items = {}
  for i = 1, leads do
    items[i] = string.format(lead_fmt, tid, letters(counter * 16 + i, 10))
  end
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = secret}
  return wrk.format("POST", path, headers, "[" .. table.concat(items, ",") .. "]")
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
