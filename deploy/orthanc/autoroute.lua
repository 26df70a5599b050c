-- Orthanc auto-routing to lumbar-node.
--
-- When a study becomes stable (no new instance for StableAge seconds), send its MR series to
-- lumbar-node if the study is a lumbar spine MR. The node later stores its results (SR, SEG,
-- key image) into the same study; those series must never travel back to the node, or every
-- result would trigger a new analysis. Two guards keep that loop closed:
--   * result series are recognised by SeriesDescription prefix and Manufacturer and are skipped;
--   * a study is routed once: the study gets the "LumbarNodeRouted" metadata after routing and
--     a later stable event on the same study (for example when the results arrive) is ignored.
--
-- Settings come from the "LumbarNode" section of the Orthanc configuration, so the same script
-- serves docker compose, Kubernetes and the test harness, which only change orthanc.json.

local DEFAULTS = {
  Modality = "lumbarnode",               -- symbolic name in DicomModalities
  ResultSeriesPrefix = "AI lumbar",      -- SeriesDescription prefix of the node's results
  ResultManufacturer = "lumbar-node",    -- Manufacturer (0008,0070) of the node's results
  RoutedMetadata = "LumbarNodeRouted",   -- user metadata name declared in UserMetadata
}

function LumbarNodeSettings()
  local settings = {}
  for key, value in pairs(DEFAULTS) do
    settings[key] = value
  end
  local own = GetOrthancConfiguration()["LumbarNode"]
  if own ~= nil then
    for key, value in pairs(own) do
      settings[key] = value
    end
  end
  return settings
end

-- Upper-case words of a DICOM text value: "L-Spine w/o" -> {"L", "SPINE", "W", "O"}.
local function Words(text)
  local words = {}
  if text == nil then
    return words
  end
  for word in string.gmatch(string.upper(text), "[%w]+") do
    table.insert(words, word)
  end
  return words
end

-- True for lumbar spine wording: the DICOM body part terms LSPINE, LSSPINE (lumbosacral) and
-- TLSPINE (thoracolumbar), "L-SPINE" / "L SPINE", and any word starting with LUMB (lumbar,
-- lumbosacral). Whole words only, so "CERVICAL SPINE" does not match.
function IsLumbarText(text)
  local words = Words(text)
  for i, word in ipairs(words) do
    if word == "LSPINE" or word == "LSSPINE" or word == "TLSPINE" then
      return true
    end
    if string.sub(word, 1, 4) == "LUMB" then
      return true
    end
    if word == "L" and words[i + 1] == "SPINE" then
      return true
    end
  end
  return false
end

-- A series the node produced: its results must not be routed back to it.
function IsNodeResult(seriesTags, settings)
  local description = seriesTags["SeriesDescription"] or ""
  local prefix = settings["ResultSeriesPrefix"]
  if prefix ~= "" and string.sub(string.upper(description), 1, string.len(prefix))
      == string.upper(prefix) then
    return true
  end
  local manufacturer = seriesTags["Manufacturer"] or ""
  return manufacturer ~= "" and string.upper(manufacturer)
      == string.upper(settings["ResultManufacturer"])
end

local function HasMetadata(studyId, name)
  local names = ParseJson(RestApiGet("/studies/" .. studyId .. "/metadata"))
  for _, present in ipairs(names) do
    if present == name then
      return true
    end
  end
  return false
end

-- The MR series of a lumbar spine study that are not the node's results, or an empty list.
function LumbarSeriesToRoute(studyId, studyTags, settings)
  local series = ParseJson(RestApiGet("/studies/" .. studyId .. "/series"))
  local studyIsLumbar = IsLumbarText(studyTags["StudyDescription"])
      or IsLumbarText(studyTags["RequestedProcedureDescription"])
  local candidates = {}
  local anyLumbar = studyIsLumbar
  for _, s in ipairs(series) do
    local tags = s["MainDicomTags"]
    if tags["Modality"] == "MR" and not IsNodeResult(tags, settings) then
      table.insert(candidates, s["ID"])
      if IsLumbarText(tags["BodyPartExamined"]) or IsLumbarText(tags["SeriesDescription"])
          or IsLumbarText(tags["ProtocolName"]) then
        anyLumbar = true
      end
    end
  end
  if not anyLumbar then
    return {}
  end
  return candidates
end

function OnStableStudy(studyId, tags, metadata)
  local settings = LumbarNodeSettings()
  if HasMetadata(studyId, settings["RoutedMetadata"]) then
    print("lumbar-node autoroute: study " .. studyId .. " already routed, skipped")
    return
  end
  local toRoute = LumbarSeriesToRoute(studyId, tags, settings)
  if #toRoute == 0 then
    print("lumbar-node autoroute: study " .. studyId .. " is not a lumbar spine MR, skipped")
    return
  end
  -- One asynchronous store job: a single association, retried from /jobs if the node is down.
  local job = ParseJson(RestApiPost(
    "/modalities/" .. settings["Modality"] .. "/store",
    DumpJson({ Resources = toRoute, Asynchronous = true, Permissive = false })))
  RestApiPut("/studies/" .. studyId .. "/metadata/" .. settings["RoutedMetadata"],
    "job " .. job["ID"])
  print("lumbar-node autoroute: study " .. studyId .. " (" .. #toRoute
    .. " series) sent to " .. settings["Modality"] .. " in job " .. job["ID"])
end
