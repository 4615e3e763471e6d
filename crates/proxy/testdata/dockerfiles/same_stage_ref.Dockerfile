FROM reg.example/a:1 AS a
COPY --from=a /f /g
