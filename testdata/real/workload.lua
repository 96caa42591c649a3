-- A deterministic workout for the Lua interpreter (tests/real_programs_test.cc): the parser, the VM,
-- the garbage collector, strings and patterns, tables, closures, metatables, coroutines, errors
-- (longjmp in C Lua), string.pack, utf8 and load(). Prints one checksum line per part; ROUNDS
-- (argument 1, default 1) repeats the whole, so a run lasts as long as a test needs; with "paced"
-- (argument 2) each round first reads a line from stdin.
local rounds = tonumber(arg[1] or "1")
local paced = arg[2] == "paced"  -- each round waits for a line on stdin (the test toggles sites between them)
local function fnv(h, s)
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return h
end
local function part(name, f)
  local h = fnv(2166136261, name)
  f(function(v) h = fnv(h, tostring(v)) end)
  print(string.format("%-12s %08x", name, h))
end

for r = 1, rounds do
  if paced then io.read("l") end
  part("strings", function(out)
    local words = {}
    for w in ("the quick brown fox jumps over the lazy dog " .. r):gmatch("%a+") do words[#words + 1] = w:upper() end
    out(table.concat(words, ","))
    out(("hello world from lua"):gsub("(%w+)", "<%1>"))
    out(string.format("%5.2f|%d|%x|%q", math.pi, 42, 255, "a\nb"))
    out(string.rep("ab", 5, "-"))
    for i = 1, 200 do out(("%d:%s"):format(i, tostring(i * 1.5))) end
  end)
  part("tables", function(out)
    local t = {}
    for i = 1, 2000 do t[i] = (i * 7919) % 1009 end
    table.sort(t)
    out(t[1] .. " " .. t[1000] .. " " .. t[2000])
    table.sort(t, function(a, b) return a > b end)
    out(table.concat(t, " ", 1, 20))
    local m = {}
    for i = 1, 500 do m["k" .. i] = i * i end
    local s = 0
    for k, v in pairs(m) do s = s + v + #k end
    out(s)
    out(select("#", table.unpack(t, 1, 100)))
  end)
  part("closures", function(out)
    local function counter()
      local n = 0
      return function() n = n + 1; return n end
    end
    local cs = {}
    for i = 1, 100 do cs[i] = counter() end
    local s = 0
    for j = 1, 50 do for i = 1, 100 do s = s + cs[i]() end end
    out(s)
    local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
    out(fib(20))
  end)
  part("metatables", function(out)
    local V = {}
    V.__index = V
    V.__add = function(a, b) return setmetatable({x = a.x + b.x, y = a.y + b.y}, V) end
    V.__tostring = function(v) return "(" .. v.x .. "," .. v.y .. ")" end
    local acc = setmetatable({x = 0, y = 0}, V)
    for i = 1, 1000 do acc = acc + setmetatable({x = i, y = -i}, V) end
    out(tostring(acc))
    local proxy = setmetatable({}, {__index = function(_, k) return k * 2 end})
    out(proxy[21])
  end)
  part("coroutines", function(out)
    local gen = coroutine.wrap(function()
      for i = 1, 300 do coroutine.yield(i * i) end
    end)
    local s = 0
    for _ = 1, 300 do s = s + gen() end
    out(s)
    local co = coroutine.create(function(a) local b = coroutine.yield(a + 1); error("boom " .. b) end)
    out(select(2, coroutine.resume(co, 1)))
    out(select(2, coroutine.resume(co, 5)))
  end)
  part("errors", function(out)
    for i = 1, 200 do
      local ok, e = pcall(function() if i % 3 == 0 then error({code = i}) end return i end)
      out(ok and e or e.code)
    end
    out(select(2, pcall(error, "plain")))
    out(select(2, xpcall(function() local x = nil; return x.y end, function(m) return "handled: " .. m:gsub("^.-:%d+: ", "") end)))
  end)
  part("gc", function(out)
    local weak = setmetatable({}, {__mode = "k"})
    for i = 1, 2000 do weak[{}] = i end
    collectgarbage("collect")
    local n = 0
    for _ in pairs(weak) do n = n + 1 end
    out(n)
    local big = {}
    for i = 1, 20000 do big[i] = {i, tostring(i)} end
    out(#big)
    big = nil
    collectgarbage("collect")
  end)
  part("pack-utf8", function(out)
    local p = string.pack("<i4d s1", 123456, 2.5, "xyz")
    out(#p)
    out(string.unpack("<i4d s1", p))
    out(utf8.char(72, 228, 8364, 128512))
    out(utf8.len("häll€"))
    for _, c in utf8.codes("añb€") do out(c) end
  end)
  part("load", function(out)
    local src = {}
    for i = 1, 100 do src[#src + 1] = ("local v%d = %d * 3"):format(i, i) end
    src[#src + 1] = "return v1 + v50 + v100"
    out(load(table.concat(src, "\n"))())
    out(select(2, load("return +")))
  end)
end
