FROM reg.example/a:1
COPY --from=a --from=b /f /g
