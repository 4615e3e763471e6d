# check=skip=all
# escape=`
FROM reg.example/a:1`
COPY --from=reg.example/c:1 /f /g
