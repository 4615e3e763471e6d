FROM reg.example/a:1
COPY --from=1 /f /g
