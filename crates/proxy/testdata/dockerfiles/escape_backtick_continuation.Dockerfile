# escape=`
FROM reg.example/a:1 `
  AS b
COPY --from=b `
  /f /g
FROM b
